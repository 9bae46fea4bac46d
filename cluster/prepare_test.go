package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePreparer records the copies a node was asked to prepare and abandon,
// and fails to prepare those whose backing path is in fail.
type fakePreparer struct {
	mu        sync.Mutex
	fail      map[string]string // backing path -> error
	prepared  []uint64          // LUN IDs
	abandoned []uint64
}

func (p *fakePreparer) PrepareLUN(_ context.Context, l DesiredLUN) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if msg, ok := p.fail[l.BackingPath]; ok {
		return errors.New(msg)
	}
	p.prepared = append(p.prepared, l.ID)
	return nil
}

func (p *fakePreparer) AbandonLUN(_ context.Context, l DesiredLUN) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.abandoned = append(p.abandoned, l.ID)
	return nil
}

func (p *fakePreparer) get() (prepared, abandoned []uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.prepared), slices.Clone(p.abandoned)
}

// TestCreateThatANodeCannotCarryOutLeavesNothing: a LUN whose copy one
// node of its placement cannot prepare is refused with that node's name
// and reason; the other nodes' prepared copies are abandoned; no LUN is in
// any node's state. A create every node can carry out goes through, each
// node having prepared its copy under the ID the LUN then has.
func TestCreateThatANodeCannotCarryOutLeavesNothing(t *testing.T) {
	preps := map[string]*fakePreparer{}
	for _, id := range []string{"n1", "n2", "n3"} {
		preps[id] = &fakePreparer{fail: map[string]string{}}
	}
	preps["n3"].fail["/dev/nonexistent"] = "block device: stat /dev/nonexistent: no such file or directory"
	c := threeNodesWith(t, func(cfg *Config) { cfg.Preparer = preps[cfg.NodeID] })
	f := c.follower()
	cl := NewClient(f.cfg.APIAddr, testToken, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.CreateTarget(ctx, iqnA, ""); err != nil {
		t.Fatal(err)
	}

	err := cl.CreateLUN(ctx, iqnA, LUNRequest{LUN: 0, Size: 1 << 20, Backing: BackingBlock, Path: "/dev/nonexistent",
		Placement: []string{"n1", "n3"}})
	if !errors.Is(err, ErrBacking) {
		t.Fatalf("a LUN n3 cannot open: %v, want %s", err, ErrBacking.Code)
	}
	for _, w := range []string{"LUN 0 of " + iqnA + " not created", "on n3: block device: stat /dev/nonexistent", "Nothing was created"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q does not say %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "on n1") {
		t.Errorf("%q blames n1, which prepared its copy", err)
	}
	prepared, abandoned := preps["n1"].get()
	if len(prepared) != 1 || !slices.Equal(abandoned, prepared) {
		t.Errorf("n1 prepared %v and abandoned %v: want the refused LUN's copy abandoned", prepared, abandoned)
	}
	if p, _ := preps["n2"].get(); len(p) != 0 {
		t.Errorf("n2, outside the placement, prepared %v", p)
	}
	c.waitConverged("the refused create left no LUN", func(s *State) bool { return s.Targets[iqnA] != nil && len(s.Targets[iqnA].LUNs) == 0 })

	// A placement on a dead node is refused before anyone prepares.
	lead := c.leader()
	var dead string
	for id := range c.nodes {
		if id != lead.id && id != f.id {
			dead = id
		}
	}
	c.nodes[dead].stop()
	c.waitFor(dead+" recorded dead", func() bool {
		n := lead.fsm.State().Nodes[dead]
		return n != nil && n.Health != HealthAlive
	})
	err = cl.CreateLUN(ctx, iqnA, LUNRequest{LUN: 1, Size: 1 << 20, Placement: []string{lead.id, dead}})
	if !errors.Is(err, ErrNotEnoughNodes) || !strings.Contains(err.Error(), dead+", which is dead") {
		t.Errorf("a placement on dead %s: %v", dead, err)
	}

	// Every node can: created, each copy prepared under the LUN's ID
	// (which the refused LUN, never committed, may have had too), and
	// none abandoned.
	abandonedBefore := map[string]int{}
	for _, id := range []string{f.id, lead.id} {
		_, a := preps[id].get()
		abandonedBefore[id] = len(a)
	}
	if err := cl.CreateLUN(ctx, iqnA, LUNRequest{LUN: 2, Size: 1 << 20, Placement: []string{f.id, lead.id}}); err != nil {
		t.Fatal(err)
	}
	l := lunOn(f, iqnA, 2)
	if l == nil {
		t.Fatal("LUN 2 not in the follower's state after its create returned")
	}
	for _, id := range []string{f.id, lead.id} {
		if p, a := preps[id].get(); len(p) == 0 || p[len(p)-1] != l.ID || len(a) != abandonedBefore[id] {
			t.Errorf("%s prepared %v and abandoned %v: want LUN 2's ID %d prepared last, nothing more abandoned", id, p, a, l.ID)
		}
	}
}

// TestLUNIDChosenByTheLeader: the state machine takes a LUN ID chosen
// by the leader when it is past the last one, refuses one already passed,
// and numbers LUNs without one (entries written before) as before.
func TestLUNIDChosenByTheLeader(t *testing.T) {
	f := NewFSM(nil)
	apply := func(cmd Command) error { return f.ApplyCommand(cmd) }
	if err := apply(mustCmd(t, CmdTargetCreate, TargetCreate{IQN: iqnA})); err != nil {
		t.Fatal(err)
	}
	if err := apply(mustCmd(t, CmdNodeRegister, NodeRegister{Node: NodeInfo{ID: "n1", RaftAddr: "127.0.0.1:1", APIAddr: "127.0.0.1:2"}})); err != nil {
		t.Fatal(err)
	}
	create := func(n, id uint64) error {
		l := lun(n, "n1")
		l.ID = id
		return apply(mustCmd(t, CmdLUNCreate, LUNCreate{LUN: l}))
	}
	for _, step := range []struct {
		n, id, want uint64
		ok          bool
	}{
		{0, 0, 1, true},  // no ID: the next one
		{1, 5, 5, true},  // chosen past the last
		{2, 5, 0, false}, // taken
		{2, 3, 0, false}, // passed
		{2, 0, 6, true},
	} {
		err := create(step.n, step.id)
		if (err == nil) != step.ok {
			t.Fatalf("LUN %d with ID %d: %v", step.n, step.id, err)
		}
		if step.ok {
			if got := f.State().Targets[iqnA].LUNs[step.n].ID; got != step.want {
				t.Errorf("LUN %d has ID %d, want %d", step.n, got, step.want)
			}
		}
	}
}
