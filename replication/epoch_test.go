package replication

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
)

// coordCheck is the EpochCheck of a node whose applied state is coord's.
func coordCheck(coord Coordinator) EpochCheck {
	return func(lun LUNID, epoch uint64) error {
		v, err := coord.View(context.Background(), lun)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrEpochUnknown, err)
		}
		if v.Epoch < epoch {
			return fmt.Errorf("%w: LUN at epoch %d", ErrEpochUnknown, v.Epoch)
		}
		return nil
	}
}

// Invariant 2, against forged frames: a mirror with an epoch check takes
// a newer epoch only once the cluster committed it. Frames from anyone
// with the largest epoch (or the next, not committed) are refused and
// change nothing, and the copy goes on serving its real owner.
func TestMirrorRefusesUncommittedEpoch(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	for _, m := range c.mirrors {
		m.SetEpochCheck(coordCheck(c.coord))
	}
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(1, 8192), 0); err != nil {
		t.Fatal(err)
	}
	m := c.mirrors["b"]
	newest, before := m.Newest(testLUN), c.read("b", 0, c.size)
	for _, req := range []*Message{
		{Type: MsgHello, LUN: testLUN, Epoch: math.MaxUint64},
		{Type: MsgWrite, LUN: testLUN, Epoch: math.MaxUint64, Seq: 1 << 62, Length: 4096, Payload: bytes.Repeat([]byte{0xee}, 4096)},
		{Type: MsgUnmap, LUN: testLUN, Epoch: 2, Seq: 1 << 62, Length: 1 << 20},
		{Type: MsgFlush, LUN: testLUN, Epoch: 2},
	} {
		if rep := m.Handle(req); rep.Status != StatusEpochUnknown {
			t.Fatalf("forged %v of epoch %d: %v, want %v", req.Type, req.Epoch, rep.Status, StatusEpochUnknown)
		}
	}
	// And through the network, from a node that owns nothing.
	conn, err := c.net.Transport("x").Dial(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if st := sendOne(t, conn, &Message{Type: MsgHello, LUN: testLUN, Epoch: math.MaxUint64}); st != StatusEpochUnknown {
		t.Fatalf("forged hello over the network: %v", st)
	}
	conn.Close()
	if got := m.Newest(testLUN); got != newest {
		t.Fatalf("forged frames moved the mirror's newest epoch from %d to %d", newest, got)
	}
	if !bytes.Equal(c.read("b", 0, c.size), before) {
		t.Fatal("a forged frame changed the copy")
	}
	if got := m.Stats(testLUN).UnknownRefused; got != 5 {
		t.Fatalf("UnknownRefused %d, want 5", got)
	}
	// The real owner is still served, b still in sync.
	if _, err := v.WriteAt(pattern(2, 8192), 65536); err != nil {
		t.Fatal(err)
	}
	if err := v.Serving(); err != nil || !c.view().IsInSync("b") {
		t.Fatalf("owner serving: %v; view %+v", err, c.view())
	}
	c.identical("a", "b")
	// A committed newer epoch does get through (and fences the old owner).
	epoch := c.coord.NewEpoch(testLUN, "b")
	if rep := m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: epoch}); rep.Status != StatusOK || m.Newest(testLUN) != epoch {
		t.Fatalf("hello of the committed epoch %d: %v, newest %d", epoch, rep.Status, m.Newest(testLUN))
	}
}

// A new owner whose epoch a mirror's node applies a moment after the owner
// does: its hello is refused as unknown at first and gets through on a
// retry; the copy stays in sync.
func TestOwnerHelloRetriesUntilEpochKnown(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	var checks atomic.Int32
	c.mirrors["b"].SetEpochCheck(func(lun LUNID, epoch uint64) error {
		if checks.Add(1) <= 3 { // b's node has not applied the epoch yet
			return ErrEpochUnknown
		}
		return coordCheck(c.coord)(lun, epoch)
	})
	epoch := c.coord.NewEpoch(testLUN, "a")
	v := c.open("a", Config{}, nil)
	if n := checks.Load(); n < 4 {
		t.Fatalf("the mirror checked the epoch %d times, want at least 4 (3 refusals)", n)
	}
	if got := c.mirrors["b"].Newest(testLUN); got != epoch {
		t.Fatalf("b's newest epoch %d, want %d", got, epoch)
	}
	if _, err := v.WriteAt(pattern(1, 8192), 0); err != nil {
		t.Fatal(err)
	}
	if !c.view().IsInSync("b") || !hasPeerState(v, "b", "in-sync") {
		t.Fatalf("b not in sync after the retried hello: %+v %+v", c.view(), v.Peers())
	}
	c.identical("a", "b")
}

// A mirror that never learns the epoch is given up on after AckTimeout:
// the owner drops it like an unreachable copy (before acknowledging a
// write it misses), and the mirror's state did not move.
func TestOwnerHelloGivesUpOnUnknownEpoch(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	var checks atomic.Int32
	c.mirrors["b"].SetEpochCheck(func(LUNID, uint64) error {
		checks.Add(1)
		return ErrEpochUnknown
	})
	c.coord.NewEpoch(testLUN, "a")
	cfg := testConfig()
	cfg.AckTimeout = 3 * helloRetry
	v := c.open("a", cfg, nil)
	if n := checks.Load(); n != 4 {
		t.Fatalf("the owner said hello %d times, want 4 (one, then a retry every helloRetry for AckTimeout)", n)
	}
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("b") || c.mirrors["b"].Newest(testLUN) != 0 {
		t.Fatalf("view %+v, b's newest %d", c.view(), c.mirrors["b"].Newest(testLUN))
	}
}
