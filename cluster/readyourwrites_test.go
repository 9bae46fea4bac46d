package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestFollowerReadsItsOwnWrites: a change made through a follower's API
// returns only once that follower applied it, so a read through the same
// follower right after sees it (as consul's default consistency does).
// Twenty create/list pairs, each list must see its create.
func TestFollowerReadsItsOwnWrites(t *testing.T) {
	c := threeNodes(t)
	f := c.follower()
	cl := NewClient(f.cfg.APIAddr, testToken, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	missed := 0
	for i := range 20 {
		iqn := fmt.Sprintf("iqn.2026-11.io.hatgt:ryw-%d", i)
		if err := cl.CreateTarget(ctx, iqn, ""); err != nil {
			t.Fatalf("create %s through follower %s: %v", iqn, f.id, err)
		}
		st, err := cl.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ts := range st.Targets {
			found = found || ts.IQN == iqn
		}
		if !found {
			missed++
		}
	}
	if missed > 0 {
		t.Errorf("a list through follower %s right after a create through it missed the new target %d times of 20", f.id, missed)
	}
}

// CatchUp on a follower returns once it applied everything the leader had
// committed: a change made through the leader a moment before is in the
// follower's state after it (what a leave decides on).
func TestCatchUpSeesChangesMadeElsewhere(t *testing.T) {
	c := threeNodes(t)
	l := c.leader()
	f := c.follower()
	for i := 0; i < 20; i++ {
		iqn := fmt.Sprintf("iqn.2026-01.org.hatgt:catchup%d", i)
		if err := c.apply(l, CmdTargetCreate, TargetCreate{IQN: iqn}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := f.CatchUp(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if f.FSM().State().Targets[iqn] == nil {
			t.Fatalf("after CatchUp the follower's state lacks %s, created through the leader before", iqn)
		}
	}
}

// WaitAppliedOn asks another node, through its API, to say when it
// applied an entry: at once for one it applied, not before it applied it
// (an entry far ahead times out), and never for a node not in the state.
func TestWaitAppliedOn(t *testing.T) {
	c := threeNodes(t)
	l := c.leader()
	f := c.follower()
	cmd, err := NewCommand(CmdTargetCreate, TargetCreate{IQN: "iqn.2026-01.org.hatgt:applied-on"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, err := l.Apply(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WaitAppliedOn(ctx, f.id, idx); err != nil {
		t.Fatalf("leader asking follower %s about entry %d: %v", f.id, idx, err)
	}
	if got := f.FSM().AppliedIndex(); got < idx {
		t.Fatalf("follower %s said it applied %d, but has applied %d", f.id, idx, got)
	}
	if err := f.WaitAppliedOn(ctx, l.id, idx); err != nil {
		t.Fatalf("follower asking the leader: %v", err)
	}
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if err := l.WaitAppliedOn(short, f.id, idx+1000); err == nil {
		t.Fatal("a node said it applied an entry that does not exist yet")
	}
	if err := l.WaitAppliedOn(ctx, "nobody", idx); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("asking a node not in the state: %v", err)
	}
}
