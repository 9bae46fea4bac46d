package cluster

import (
	"strings"
	"testing"
	"time"
)

// fastLease gives the test nodes a short owner lease (the harness's Raft
// heartbeat timeout is 100ms), so that a failover waits about half a
// second instead of three.
func fastLease(c *Config) { c.OwnerLease = 300 * time.Millisecond }

// An owner that dies loses its LUNs to the first alive in-sync copy of the
// placement, under a new epoch, on every remaining node; a LUN whose only
// in-sync copy is the dead owner keeps it (and the leader says why).
func TestFailoverMovesOwnerOfDeadNode(t *testing.T) {
	c := threeNodesWith(t, fastLease)
	c.createLUN(iqnA, 0, "n1", "n2", "n3")
	c.createLUN(iqnA, 1, "n1", "n2", "n3")
	// LUN 1 keeps a single in-sync copy: n1's.
	for _, id := range []string{"n2", "n3"} {
		if err := c.apply(c.leader(), CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 1, Epoch: 1, Node: id}); err != nil {
			t.Fatal(err)
		}
	}
	c.waitConverged("LUN 1 in sync on n1 only", func(s *State) bool {
		l := s.Targets[iqnA].LUNs[1]
		return len(l.InSync) == 1 && l.InSync[0] == "n1"
	})

	c.nodes["n1"].stop()
	c.waitConverged("LUN 0 moved off the dead owner", func(s *State) bool {
		return s.Targets[iqnA].LUNs[0].Owner != "n1"
	})
	for _, id := range []string{"n2", "n3"} {
		n := c.nodes[id]
		l0 := lunOn(n, iqnA, 0)
		if l0.Owner != "n2" || l0.Epoch != 2 {
			t.Errorf("%s: LUN 0 owner %q epoch %d, want n2 (first in-sync alive copy) at epoch 2", id, l0.Owner, l0.Epoch)
		}
		if h := n.fsm.State().Nodes["n1"].Health; h != HealthDead {
			t.Errorf("%s: n1 recorded %q when its LUN moved, want dead", id, h)
		}
	}

	c.waitFor("the stuck LUN reported", func() bool { return strings.Contains(c.logs.String(), "LUN stuck without a serving owner") })
	for _, id := range []string{"n2", "n3"} {
		if l1 := lunOn(c.nodes[id], iqnA, 1); l1.Owner != "n1" || l1.Epoch != 1 {
			t.Errorf("%s: LUN 1 owner %q epoch %d; with no other in-sync copy it must stay n1's at epoch 1", id, l1.Owner, l1.Epoch)
		}
	}
	logs := c.logs.String()
	stuck := strings.Count(logs, "LUN stuck without a serving owner")
	leaders := strings.Count(logs, "became leader")
	if stuck > leaders {
		t.Errorf("stuck LUN reported %d times under %d leaderships: want at most once per leader", stuck, leaders)
	}
	if !strings.Contains(logs, "not in sync") {
		t.Error("the stuck report does not say the other copies are not in sync")
	}
}

// Invariant 5: an owner cut off from the others has lost its lease by the
// time anyone else is made owner. The lease here is longer than gossip
// takes to call a node dead, so that the wait itself is what is tested.
func TestFailoverPartitionedOwnerLosesLeaseFirst(t *testing.T) {
	c := threeNodesWith(t, func(c *Config) { c.OwnerLease = 1500 * time.Millisecond })
	f := c.follower()
	var others []string
	for id := range c.nodes {
		if id != f.id {
			others = append(others, id)
		}
	}
	c.createLUN(iqnA, 0, f.id, others[0], others[1])
	c.waitFor("owner holds its lease", f.HoldsLease)

	c.partition(f.id)
	majority := c.nodes[others[0]]
	c.waitFor("LUN moved off the partitioned owner", func() bool {
		l := lunOn(majority, iqnA, 0)
		if l.Owner == f.id {
			return false
		}
		// The move is committed: the old owner must already be out of
		// its lease.
		if f.HoldsLease() {
			t.Fatalf("LUN given to %s at epoch %d while the old owner %s still holds its lease", l.Owner, l.Epoch, f.id)
		}
		return true
	})
	if l := lunOn(f, iqnA, 0); l.Owner != f.id || l.Epoch != 1 {
		t.Errorf("partitioned node has owner %q epoch %d: it cannot have seen a change", l.Owner, l.Epoch)
	}

	// Healed, it learns that it no longer owns the LUN.
	c.heal(f.id)
	c.waitConverged("healed node knows the new owner", func(s *State) bool {
		l := s.Targets[iqnA].LUNs[0]
		return l.Owner != f.id && l.Epoch == 2
	})
	c.waitFor("healed node holds its lease again", f.HoldsLease)
}

// Invariant 5: without a Raft quorum no ownership changes, however long
// the owner is gone; with the quorum back, the LUN moves.
func TestFailoverNeedsQuorum(t *testing.T) {
	c := threeNodesWith(t, fastLease)
	c.createLUN(iqnA, 0, "n1", "n2", "n3")
	n3 := c.nodes["n3"]

	c.nodes["n1"].stop()
	c.nodes["n2"].stop()
	c.waitFor("n3 without a leader", func() bool { id, _ := n3.Leader(); return id == "" && !n3.IsLeader() })
	// Several failover delays: a leader would have moved the LUN by now.
	time.Sleep(4 * n3.FailoverDelay())
	if l := lunOn(n3, iqnA, 0); l.Owner != "n1" || l.Epoch != 1 {
		t.Fatalf("without quorum: owner %q epoch %d, want n1 at epoch 1", l.Owner, l.Epoch)
	}
	if n3.HoldsLease() {
		t.Error("n3 holds the owner lease without a leader")
	}

	c.start("n2", false, fastLease)
	c.waitConverged("LUN moved once the quorum is back", func(s *State) bool {
		t := s.Targets[iqnA] // nil on n2 until it replayed the log
		return t != nil && t.LUNs[0] != nil && t.LUNs[0].Owner != "n1"
	})
	l := lunOn(n3, iqnA, 0)
	if (l.Owner != "n2" && l.Owner != "n3") || l.Epoch != 2 {
		t.Errorf("owner %q epoch %d, want n2 or n3 at epoch 2", l.Owner, l.Epoch)
	}
}

// A LUN left without owner (its owner removed while no other copy was in
// sync) gets the first copy that is in sync again.
func TestFailoverOwnerless(t *testing.T) {
	s := NewState()
	for _, id := range []string{"n1", "n2", "n3"} {
		s.Nodes[id] = &NodeInfo{ID: id, Health: HealthAlive}
	}
	s.Nodes["n3"].Health = HealthDead
	l := &LUN{Target: iqnA, LUN: 0, Placement: []string{"n2", "n3"}, InSync: []string{"n2", "n3"}, Epoch: 4}
	n := &Node{cfg: Config{NodeID: "n1"}}
	servers := map[string]bool{"n1": true, "n2": true, "n3": true}
	failed := map[string]bool{"n3": true}

	if why := n.ownerGone(s, l, servers, failed); why != "no owner" {
		t.Errorf("ownerless LUN: %q", why)
	}
	if to, why := pickOwner(s, l, "n1", failed); to != "n2" {
		t.Errorf("picked %q (%s), want n2", to, why)
	}
	l.InSync = []string{"n3"}
	if to, why := pickOwner(s, l, "n1", failed); to != "" || !strings.Contains(why, "n2 not in sync") || !strings.Contains(why, "n3 dead") {
		t.Errorf("picked %q, why %q: want none, n2 not in sync, n3 dead", to, why)
	}
}

func TestFailoverOwnerGone(t *testing.T) {
	s := NewState()
	for id, h := range map[string]string{"n1": HealthAlive, "n2": HealthDead, "n3": HealthLeft, "n4": HealthAlive} {
		s.Nodes[id] = &NodeInfo{ID: id, Health: h}
	}
	n := &Node{cfg: Config{NodeID: "n1"}}
	servers := map[string]bool{"n1": true, "n2": true, "n4": true}
	for _, tc := range []struct {
		owner  string
		failed bool
		gone   bool
	}{
		{"n1", false, false}, // the leader itself
		{"n2", true, true},   // dead, heartbeats fail
		{"n2", false, false}, // dead to gossip, but Raft reaches it: it renews its lease
		{"n3", false, true},  // left, no Raft server any more
		{"n4", true, false},  // heartbeats fail but gossip sees it alive
		{"n5", false, true},  // not a member
	} {
		failed := map[string]bool{tc.owner: tc.failed}
		why := n.ownerGone(s, &LUN{Owner: tc.owner}, servers, failed)
		if (why != "") != tc.gone {
			t.Errorf("owner %s (heartbeats failing %v): gone %q, want gone=%v", tc.owner, tc.failed, why, tc.gone)
		}
	}
}
