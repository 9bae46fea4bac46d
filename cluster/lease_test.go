package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/hatgt/hatgt/replication"
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
	// A new leader's lease starts with its first leadership check.
	c.waitFor("leader holds its lease", old.HoldsLease)
	c.partition(old.id)
	nl := c.leader(old.id)
	c.waitFor("new leader holds its lease", nl.HoldsLease)
	c.waitFor("cut-off old leader loses its lease", func() bool { return !old.HoldsLease() })
	c.heal(old.id)
	c.waitFor("old leader, healed, holds a lease again", old.HoldsLease)
}

// The lease runs on the node's clock and never comes back once it ended:
// a contact after the end starts a new generation, and what was opened
// under the old one stays refused (a node waking from a stall).
func TestLeaseGenerations(t *testing.T) {
	clk := replication.NewManualClock(time.Unix(1000, 0))
	l := newLease(clk, time.Second)
	if _, ok := l.current(); ok {
		t.Fatal("a lease before any contact")
	}
	l.renew(clk.Now())
	g, ok := l.current()
	if !ok || !l.valid(g) {
		t.Fatalf("after a contact: gen %d, ok %v, valid %v", g, ok, l.valid(g))
	}
	clk.Advance(900 * time.Millisecond)
	l.renew(clk.Now()) // renewed in time: same generation
	clk.Advance(900 * time.Millisecond)
	if !l.valid(g) {
		t.Fatal("a lease renewed in time ended")
	}
	// A stall: the clock jumps past the end, then a contact comes in
	// before anything reads the lease.
	clk.Advance(3 * time.Second)
	l.renew(clk.Now())
	if l.valid(g) {
		t.Fatal("the lease of before the stall is still valid after it ran out")
	}
	g2, ok := l.current()
	if !ok || g2 == g || !l.valid(g2) {
		t.Fatalf("after the stall: gen %d (was %d), ok %v", g2, g, ok)
	}
	// An old contact (before the end) does not extend the new lease's
	// deadline backwards nor revive anything.
	l.renew(clk.Now().Add(-10 * time.Second))
	if !l.valid(g2) || l.valid(g) {
		t.Fatal("an old contact changed the lease")
	}
	// A contact stamped in the future (another clock) counts from now.
	clk.Advance(2 * time.Second)
	if l.valid(g2) {
		t.Fatal("lease valid past its end")
	}
	l.renew(clk.Now().Add(time.Hour))
	g3, _ := l.current()
	clk.Advance(1100 * time.Millisecond)
	if l.valid(g3) {
		t.Fatal("a contact stamped in the future extended the lease beyond one lease from now")
	}
}
