package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClusterReplicatesAndForwards(t *testing.T) {
	c := threeNodes(t)
	f := c.follower()
	// A change made on a follower is forwarded to the leader.
	if err := c.apply(f, CmdTargetCreate, TargetCreate{IQN: iqnA}); err != nil {
		t.Fatal(err)
	}
	// The leader chooses placement (2 copies over the 3 alive nodes).
	if err := c.apply(f, CmdLUNCreate, LUNCreate{LUN: LUN{Target: iqnA, LUN: 0, Size: 1 << 20, SectorSize: 512,
		IOMode: "wb", Backing: "fileio", Replicas: 2}}); err != nil {
		t.Fatal(err)
	}
	if err := c.apply(f, CmdLUNCreate, LUNCreate{LUN: LUN{Target: iqnA, LUN: 1, Size: 1 << 20, SectorSize: 512,
		IOMode: "wb", Backing: "fileio", Replicas: 2}}); err != nil {
		t.Fatal(err)
	}
	// Refusals cross the forward hop as typed errors.
	err := c.apply(f, CmdTargetCreate, TargetCreate{IQN: iqnA})
	if !errors.Is(err, ErrTargetExists) {
		t.Fatalf("duplicate target through a follower: %v", err)
	}
	c.waitConverged("two LUNs everywhere", func(s *State) bool {
		return s.Targets[iqnA] != nil && len(s.Targets[iqnA].LUNs) == 2
	})
	s := f.fsm.State()
	copies := s.copiesPerNode()
	// 4 copies over 3 nodes, fewest-first: 2,1,1 in some order.
	total, most := 0, 0
	for _, k := range copies {
		total += k
		most = max(most, k)
	}
	if total != 4 || most != 2 || len(copies) != 3 {
		t.Errorf("placement not spread: %v", copies)
	}
	for _, l := range s.Targets[iqnA].LUNs {
		if l.Owner != l.Placement[0] || len(l.InSync) != 2 || l.Epoch != 1 {
			t.Errorf("LUN %d: %+v", l.LUN, l)
		}
	}
}

func TestClusterQuorumLossAndHeal(t *testing.T) {
	c := threeNodes(t)
	old := c.leader()
	c.partition(old.id)

	// The majority elects a new leader and keeps accepting changes.
	nl := c.leader(old.id)
	if err := c.apply(nl, CmdTargetCreate, TargetCreate{IQN: iqnB}); err != nil {
		t.Fatalf("majority side: %v", err)
	}
	// ... and records the cut-off node dead.
	c.waitFor("old leader recorded dead", func() bool {
		n := nl.fsm.State().Nodes[old.id]
		return n != nil && n.Health == HealthDead
	})

	// The isolated node cannot change anything: a clear error, not a hang.
	cmd, _ := NewCommand(CmdTargetCreate, TargetCreate{IQN: iqnA})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := old.Apply(ctx, cmd)
	cancel()
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("isolated node: got %v, want ErrNoLeader", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "no cluster leader: quorum lost?") || !strings.Contains(msg, "1 of 3 voters reachable") {
		t.Errorf("error message %q", msg)
	}
	if _, ok := old.fsm.State().Targets[iqnB]; ok {
		t.Error("isolated node has a change it cannot have received")
	}

	c.heal(old.id)
	c.waitConverged("healed node caught up and alive", func(s *State) bool {
		n := s.Nodes[old.id]
		return s.Targets[iqnB] != nil && s.Targets[iqnA] == nil && n != nil && n.Health == HealthAlive
	})
}

func TestClusterMajorityLost(t *testing.T) {
	c := threeNodes(t)
	f := c.follower()
	for id, n := range c.nodes {
		if n != f {
			c.partition(id)
		}
	}
	cmd, _ := NewCommand(CmdTargetCreate, TargetCreate{IQN: iqnA})
	_, err := f.Apply(context.Background(), cmd)
	if !errors.Is(err, ErrNoLeader) || !strings.Contains(err.Error(), "1 of 3 voters reachable") {
		t.Fatalf("got %v, want ErrNoLeader with voter count", err)
	}
}

func TestClusterSnapshotRestartAndRemove(t *testing.T) {
	c := threeNodes(t)
	l := c.leader()
	for _, iqn := range []string{iqnA, iqnB} {
		if err := c.apply(l, CmdTargetCreate, TargetCreate{IQN: iqn}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.apply(l, CmdLUNCreate, LUNCreate{LUN: LUN{Target: iqnA, Size: 4096 * 8, SectorSize: 4096,
		IOMode: "wt", Backing: "fileio", Replicas: 3}}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged("targets everywhere", func(s *State) bool { return len(s.Targets) == 2 && len(s.Targets[iqnA].LUNs) == 1 })

	// Snapshot a follower, restart it from its stores: Raft restores the
	// FSM from the snapshot (and the log after it).
	f := c.follower()
	if err := f.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	id := f.id
	f.stop()
	f = c.start(id, false, nil)
	c.waitConverged("restarted node restored", func(s *State) bool { return len(s.Targets) == 2 && len(s.Nodes) == 3 })

	// A live node is not removed behind its back.
	victim := c.follower()
	vid := victim.id
	l = c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.RemoveNode(ctx, vid); !errors.Is(err, ErrInvalid) {
		t.Fatalf("removing a live node: %v", err)
	}
	// A dead node is removed: out of Raft and the state; its LUN copies go.
	victim.stop()
	c.waitFor("victim seen dead", func() bool { return l.gossipHealth()[vid] != HealthAlive })
	if err := l.RemoveNode(ctx, vid); err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveNode(ctx, vid); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("removing twice: %v", err)
	}
	c.waitConverged("victim removed", func(s *State) bool {
		_, ok := s.Nodes[vid]
		lu := s.Targets[iqnA].LUNs[0]
		return !ok && len(lu.Placement) == 2 && lu.Owner != vid
	})
	if n := len(l.voters()); n != 2 {
		t.Errorf("%d voters after remove, want 2", n)
	}
}

func TestClusterLeave(t *testing.T) {
	c := threeNodes(t)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The leader itself leaves: leadership moves first.
	if err := l.Leave(ctx, LeaveOptions{}); err != nil {
		t.Fatal(err)
	}
	l.Node = nil
	l.srv.Close()
	c.waitConverged("leaver gone", func(s *State) bool { _, ok := s.Nodes[l.id]; return !ok && len(s.Nodes) == 2 })
	nl := c.leader()
	if n := len(nl.voters()); n != 2 {
		t.Errorf("%d voters after leave, want 2", n)
	}
	if err := c.apply(nl, CmdTargetCreate, TargetCreate{IQN: iqnA}); err != nil {
		t.Errorf("cluster after leave: %v", err)
	}
}

// recorder is a Reconciler that keeps the last desired state and can fail.
type recorder struct {
	mu    sync.Mutex
	last  *Desired
	calls int
	fail  int // fail this many calls first
}

func (r *recorder) Reconcile(ctx context.Context, d *Desired) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail > 0 {
		r.fail--
		return errors.New("backing store not ready")
	}
	r.last = d
	return nil
}

func (r *recorder) get() (*Desired, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.calls
}

func TestClusterReconciler(t *testing.T) {
	c := newTestCluster(t)
	recs := map[string]*recorder{"n1": {}, "n2": {fail: 2}, "n3": {}}
	with := func(id string) func(*Config) { return func(cfg *Config) { cfg.Reconciler = recs[id] } }
	n1 := c.start("n1", true, with("n1"))
	c.leader()
	for _, id := range []string{"n2", "n3"} {
		n := c.start(id, false, with(id))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := n.JoinVia(ctx, n1.cfg.APIAddr); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	if err := c.apply(n1, CmdTargetCreate, TargetCreate{IQN: iqnA}); err != nil {
		t.Fatal(err)
	}
	if err := c.apply(n1, CmdLUNCreate, LUNCreate{LUN: LUN{Target: iqnA, LUN: 7, Size: 1 << 20, SectorSize: 512,
		IOMode: "wb", Backing: "fileio", Replicas: 2}}); err != nil {
		t.Fatal(err)
	}
	// Every node converges on its own view: the target everywhere, the LUN
	// on the two placed nodes, owned by exactly one.
	owned, held := 0, 0
	c.waitFor("reconcilers converged", func() bool {
		owned, held = 0, 0
		for _, r := range recs {
			d, _ := r.get()
			if d == nil || len(d.Targets) != 1 || d.Targets[0].IQN != iqnA {
				return false
			}
			for _, l := range d.Targets[0].LUNs {
				held++
				if l.Owned {
					owned++
				}
			}
		}
		return held == 2
	})
	if owned != 1 {
		t.Errorf("%d nodes told to own the LUN, want 1", owned)
	}
	// A failed reconcile is retried without a further state change: n2
	// fails on the ACL change and must still end up with the ACL.
	recs["n2"].mu.Lock()
	recs["n2"].fail = 1
	recs["n2"].mu.Unlock()
	if err := c.apply(n1, CmdACLAdd, ACLChange{IQN: iqnA, Initiator: ini1}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("n2 retried", func() bool {
		d, _ := recs["n2"].get()
		r := recs["n2"]
		r.mu.Lock()
		failed := r.fail == 0
		r.mu.Unlock()
		return failed && len(d.Targets[0].ACL) == 1
	})
	// Deleting the LUN removes it from every desired state.
	if err := c.apply(n1, CmdLUNDelete, LUNDelete{IQN: iqnA, LUN: 7}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("LUN gone from desired states", func() bool {
		for _, r := range recs {
			if d, _ := r.get(); d == nil || len(d.Targets) != 1 || len(d.Targets[0].LUNs) != 0 {
				return false
			}
		}
		return true
	})
}
