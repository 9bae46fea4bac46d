package cluster

import (
	"strings"
	"testing"
	"time"
)

func TestConfigOwnerLease(t *testing.T) {
	c := testConfig("n1")
	c.DataDir, c.RaftAddr, c.GossipAddr, c.APIAddr = t.TempDir(), "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
	if err := c.Validate(); err != nil {
		t.Fatalf("default owner lease: %v", err)
	}
	// The default fails over within about two seconds of a kill, with a
	// lease of at least twice the heartbeat timeout (a follower hears
	// from its leader twenty times per heartbeat timeout).
	if d := DefaultConfig(); d.OwnerLease < 2*d.HeartbeatTimeout || d.FailoverDelay() > 2*time.Second {
		t.Errorf("default owner lease %v, heartbeat timeout %v, failover delay %v", d.OwnerLease, d.HeartbeatTimeout, d.FailoverDelay())
	}
	for _, tc := range []struct {
		lease time.Duration
		want  string
	}{
		{0, "owner lease must be positive"},
		{-time.Second, "owner lease must be positive"},
		{c.HeartbeatTimeout, "longer than the heartbeat timeout"},
		{c.HeartbeatTimeout / 2, "raise the owner lease or lower the heartbeat timeout"},
	} {
		bad := c
		bad.OwnerLease = tc.lease
		err := bad.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("owner lease %v: got %v, want an error saying %q", tc.lease, err, tc.want)
		}
	}
	c.OwnerLease = time.Second
	if d := c.FailoverDelay(); d <= c.OwnerLease+c.ElectionTimeout {
		t.Errorf("failover delay %v leaves no margin over lease %v + election timeout %v", d, c.OwnerLease, c.ElectionTimeout)
	}
}

// Every node of a healthy cluster holds the lease; a node cut off from the
// others loses it, and gets it back when healed.
func TestLeaseFollowerPartition(t *testing.T) {
	c := threeNodesWith(t, fastLease)
	for id, n := range c.nodes {
		c.waitFor(id+" holds its lease", n.HoldsLease)
	}
	if got := c.nodes["n1"].OwnerLease(); got != 300*time.Millisecond {
		t.Errorf("OwnerLease() = %v", got)
	}
	f := c.follower()
	c.partition(f.id)
	c.waitFor("partitioned follower loses its lease", func() bool { return !f.HoldsLease() })
	for id, n := range c.nodes {
		if id != f.id {
			c.waitFor(id+" keeps its lease", n.HoldsLease)
		}
	}
	c.heal(f.id)
	c.waitFor("healed follower holds its lease again", f.HoldsLease)
}

// A leader cut off from the others steps down and loses its lease; the
// new leader holds one.
func TestLeaseLeaderPartition(t *testing.T) {
	c := threeNodesWith(t, fastLease)
	old := c.leader()
	if !old.HoldsLease() {
		t.Fatal("leader without lease")
	}
	c.partition(old.id)
	nl := c.leader(old.id)
	c.waitFor("new leader holds its lease", nl.HoldsLease)
	c.waitFor("cut-off old leader loses its lease", func() bool { return !old.HoldsLease() })
	c.heal(old.id)
	c.waitFor("old leader, healed, holds a lease again", old.HoldsLease)
}
