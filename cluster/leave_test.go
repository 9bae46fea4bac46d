package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// events is an ordered record of what the nodes of a test did.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
}

// index returns the position of the first event with prefix, or -1.
func (e *events) index(prefix string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.IndexFunc(e.log, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.log, "; ")
}

// fakeRelease is a node's serving side: it records StopServing and
// ResumeServing, and takes drain to "finish the commands in flight".
type fakeRelease struct {
	node  string
	ev    *events
	drain time.Duration
}

func (r *fakeRelease) StopServing(ctx context.Context, ids []uint64) error {
	r.ev.add("stop-begin %s %v", r.node, ids)
	select {
	case <-time.After(r.drain):
	case <-ctx.Done():
		return ctx.Err()
	}
	r.ev.add("stopped %s %v", r.node, ids)
	return nil
}

func (r *fakeRelease) ResumeServing(ids []uint64) { r.ev.add("resumed %s %v", r.node, ids) }

// withRelease gives every node a fakeRelease recording into ev.
func withRelease(ev *events) func(*Config) {
	return func(c *Config) {
		c.Release = &fakeRelease{node: c.NodeID, ev: ev, drain: 300 * time.Millisecond}
	}
}

// moveSeen is what one node saw of a LUN's first owner change.
type moveSeen struct {
	mu       sync.Mutex
	seen     bool
	owner    string
	epoch    uint64
	at       time.Time
	oldLease bool // whether the old owner still held its owner lease then
}

func (m *moveSeen) get() moveSeen {
	m.mu.Lock()
	defer m.mu.Unlock()
	return moveSeen{seen: m.seen, owner: m.owner, epoch: m.epoch, at: m.at, oldLease: m.oldLease}
}

// watchOwner watches node n apply LUN lun's first owner other than from:
// it records "moved LUN" in ev then, and returns what it saw.
func watchOwner(t *testing.T, n *testNode, from *testNode, iqn string, lun uint64, ev *events) *moveSeen {
	m := &moveSeen{}
	ch, cancel := n.fsm.Subscribe()
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); close(done) })
	go func() {
		for {
			select {
			case <-done:
				return
			case <-ch:
			}
			if l := lunOn(n, iqn, lun); l != nil && l.Owner != from.id {
				at := time.Now()
				held := from.Node != nil && from.HoldsLease()
				ev.add("moved LUN on %s to %q at epoch %d", n.id, l.Owner, l.Epoch)
				m.mu.Lock()
				m.seen, m.owner, m.epoch, m.at, m.oldLease = true, l.Owner, l.Epoch, at, held
				m.mu.Unlock()
				return
			}
		}
	}()
	return m
}

func followerOwnerLUN(t *testing.T, c *testCluster) (f *testNode, others []*testNode) {
	t.Helper()
	f = c.follower()
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != f.id {
			others = append(others, c.nodes[id])
		}
	}
	c.createLUN(iqnA, 0, f.id, others[0].id, others[1].id)
	return f, others
}

// Invariant 5 on a leave: the leaving owner stops serving its LUN (the
// serving side said so) before any node applies the LUN's new owner; the
// LUN goes to its first other in-sync copy under a new epoch, and only
// then the node leaves.
func TestLeaveHandsOverAfterStopServing(t *testing.T) {
	ev := &events{}
	c := threeNodesWith(t, withRelease(ev))
	f, others := followerOwnerLUN(t, c)
	for _, o := range others {
		watchOwner(t, o, f, iqnA, 0, ev)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.Leave(ctx, LeaveOptions{}); err != nil {
		t.Fatalf("leave: %v", err)
	}
	f.Node = nil
	f.srv.Close()
	c.waitConverged("leaver gone", func(s *State) bool { _, ok := s.Nodes[f.id]; return !ok })
	c.waitFor("both others saw the move", func() bool { return strings.Count(ev.String(), "moved LUN") == 2 })

	stopped, moved := ev.index("stopped "+f.id), ev.index("moved LUN")
	switch {
	case stopped < 0:
		t.Fatalf("the leaving owner never stopped serving (Release.StopServing not called): %s", ev)
	case moved < stopped:
		t.Fatalf("a node applied the LUN's new owner before the leaving owner stopped serving it: %s", ev)
	case ev.index("resumed") >= 0:
		t.Errorf("a successful leave resumed serving: %s", ev)
	}
	for _, o := range others {
		l := lunOn(o, iqnA, 0)
		if l.Owner != others[0].id || l.Epoch != 2 || slices.Contains(l.Placement, f.id) {
			t.Errorf("%s: LUN 0 owner %q epoch %d placement %v, want %s (the first other in-sync copy) at epoch 2 without %s",
				o.id, l.Owner, l.Epoch, l.Placement, others[0].id, f.id)
		}
	}
	t.Logf("events: %s", ev)
}

// A LUN whose only in-sync copy is on the leaving node makes the leave
// fail, naming it and saying what to do, with nothing stopped or changed;
// forced, the node leaves and the LUN is left without an owner.
func TestLeaveRefusedForLUNWithoutOtherCopy(t *testing.T) {
	ev := &events{}
	c := threeNodesWith(t, withRelease(ev))
	f := c.follower()
	c.createLUN(iqnA, 3, f.id)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := f.Leave(ctx, LeaveOptions{})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("leave with a single-copy LUN: %v, want ErrInvalid", err)
	}
	for _, want := range []string{"LUN 3 of " + iqnA, "delete", "add copies", "in sync", "--force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	if ev.index("stop-begin") >= 0 {
		t.Errorf("a refused leave stopped serving: %s", ev)
	}
	if !slices.Contains(c.leader().voters(), f.id) {
		t.Fatal("a refused leave removed the node")
	}

	if err := f.Leave(ctx, LeaveOptions{Force: true}); err != nil {
		t.Fatalf("forced leave: %v", err)
	}
	f.Node = nil
	f.srv.Close()
	c.waitConverged("leaver gone, LUN without owner", func(s *State) bool {
		_, ok := s.Nodes[f.id]
		l := s.Targets[iqnA].LUNs[3]
		return !ok && l.Owner == "" && len(l.Placement) == 0
	})
	if ev.index("stopped "+f.id) < 0 {
		t.Errorf("the forced leave did not stop serving first: %s", ev)
	}
}

// The leader does not remove a leaving node that still owns a LUN it
// could hand over (node.remove would give the LUN to another copy at
// once, while the leaving node may still serve it).
func TestLeaderRefusesLeaveOfOwner(t *testing.T) {
	c := threeNodes(t)
	f, others := followerOwnerLUN(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := f.submit(ctx, &Op{Kind: OpLeave, NodeID: f.id, Force: true})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "hands its LUNs over") {
		t.Fatalf("leave op of an owner that did not hand over: %v, want ErrInvalid", err)
	}
	if l := lunOn(others[0], iqnA, 0); l.Owner != f.id || l.Epoch != 1 {
		t.Errorf("LUN 0 owner %q epoch %d after the refusal, want %s at 1", l.Owner, l.Epoch, f.id)
	}
}

// Invariant 5 on a removal: "node remove" of an owner cut off from the
// others moves its LUN no sooner than FailoverDelay after the cut (the
// leader saw it out of reach later than that), and only once the cut-off
// owner's lease ran out. The lease is longer than gossip takes to call the
// node dead, so that the wait itself is what is tested.
func TestRemoveCutOffOwnerWaitsOutItsLease(t *testing.T) {
	ev := &events{}
	c := threeNodesWith(t, func(c *Config) { c.OwnerLease = 1500 * time.Millisecond })
	f, others := followerOwnerLUN(t, c)
	c.waitFor("owner holds its lease", f.HoldsLease)
	l := c.leader()
	m := watchOwner(t, others[0], f, iqnA, 0, ev)

	cut := time.Now()
	c.partition(f.id)
	c.waitFor("the cut-off owner seen dead by gossip", func() bool { return l.gossipHealth()[f.id] != HealthAlive })
	var answers []string
	c.waitFor("the owner removed", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := l.RemoveNode(ctx, f.id)
		if err == nil {
			return true
		}
		if !errors.Is(err, ErrOwnerLease) && !errors.Is(err, ErrInvalid) {
			t.Fatalf("remove: %v", err)
		}
		if errors.Is(err, ErrOwnerLease) && !strings.Contains(err.Error(), "retry") {
			t.Errorf("the lease answer does not say to retry: %v", err)
		}
		answers = append(answers, err.Error())
		return false
	})
	removed := time.Since(cut)
	c.waitFor("the move seen", func() bool { return m.get().seen })
	mv := m.get()
	moved := mv.at.Sub(cut)
	first := ""
	if len(answers) > 0 {
		first = answers[0]
	}
	t.Logf("owner cut off at 0, removed after %v, its LUN moved after %v (FailoverDelay %v); %d answers before, the first: %q",
		removed, moved, l.FailoverDelay(), len(answers), first)
	if moved < l.FailoverDelay() {
		t.Fatalf("the LUN moved %v after its owner was cut off, before FailoverDelay %v: the old owner may still have served it", moved, l.FailoverDelay())
	}
	if mv.oldLease {
		t.Errorf("the LUN moved while the cut-off owner still held its lease")
	}
	// others[0] applies the removal a moment after the leader answered.
	c.waitFor("the removal applied on "+others[0].id, func() bool {
		lu := lunOn(others[0], iqnA, 0)
		return lu.Owner == others[0].id && !slices.Contains(lu.Placement, f.id)
	})
}
