package replication

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A lost copy refuses everything but a hello that starts a full copy.
func TestMirrorLostCopy(t *testing.T) {
	c := newTestCluster(t, 256<<10, "a", "b")
	m := c.mirrors["b"]
	m.Fence(testLUN, 3)
	m.MarkLost(testLUN)
	for _, req := range []*Message{
		{Type: MsgHello, LUN: testLUN, Epoch: 3},
		{Type: MsgWrite, LUN: testLUN, Epoch: 3, Seq: 9, Length: 4096, Payload: make([]byte, 4096)},
		{Type: MsgFlush, LUN: testLUN, Epoch: 3},
		{Type: MsgVerify, LUN: testLUN, Epoch: 3, Length: 4096},
	} {
		if rep := m.Handle(req); rep.Status != StatusCopyLost {
			t.Fatalf("%v to a lost copy: %v, want copy-lost", req.Type, rep.Status)
		}
	}
	if rep := m.Handle(&Message{Type: MsgHello, Flags: FlagFull, LUN: testLUN, Epoch: 2}); rep.Status != StatusStaleEpoch {
		t.Fatalf("a stale full hello: %v", rep.Status)
	}
	if rep := m.Handle(&Message{Type: MsgHello, Flags: FlagFull, LUN: testLUN, Epoch: 3}); rep.Status != StatusOK || m.Lost(testLUN) {
		t.Fatalf("full hello: %v, lost %v", rep.Status, m.Lost(testLUN))
	}
	if rep := m.Handle(&Message{Type: MsgWrite, LUN: testLUN, Epoch: 3, Seq: 1, Length: 4096, Payload: make([]byte, 4096)}); rep.Status != StatusOK {
		t.Fatalf("write after the full hello: %v", rep.Status)
	}
}

// An in-sync mirror whose copy was lost (its node created the file again)
// is dropped on the next write, with every region dirty, and comes back
// through a full copy.
func TestLostInSyncCopyGetsFullCopy(t *testing.T) {
	c := newTestCluster(t, 512<<10, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	data := pattern(7, int(c.size))
	if _, err := v.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	// b's node lost its file: blank store, mirror marked lost.
	if _, err := c.stores["b"].WriteAt(make([]byte, c.size), 0); err != nil {
		t.Fatal(err)
	}
	c.mirrors["b"].MarkLost(testLUN)
	if _, err := v.WriteAt(pattern(8, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("b") {
		t.Fatal("a lost copy is still in sync after a write")
	}
	for _, p := range v.Peers() {
		if p.Node == "b" && p.DirtyRegions != int64(c.size/testConfig().RegionSize) {
			t.Fatalf("lost copy has %d dirty regions, want all", p.DirtyRegions)
		}
	}
	// Verify cannot compare a lost copy.
	if _, err := v.Verify(context.Background(), "b"); !errors.Is(err, ErrCopyLost) {
		t.Fatalf("verify of a lost copy: %v", err)
	}
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if p, _ := v.Progress("b"); p.BytesCopied != c.size {
		t.Fatalf("lost copy resynced %d bytes, want all %d", p.BytesCopied, c.size)
	}
	c.identical("a", "b", "c")
}

// A copy's node that finds its copy lost records it out of sync in Raft;
// the owner, seeing that view, probes the copy and gives it a full copy
// without waiting for a write.
func TestLostCopyReportedThroughTheView(t *testing.T) {
	c := newTestCluster(t, 256<<10, "a", "b")
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(9, int(c.size)), 0); err != nil {
		t.Fatal(err)
	}
	c.mirrors["b"].MarkLost(testLUN)
	view := c.view()
	view.InSync = []NodeID{"a"}
	c.coord.SetView(testLUN, view)
	for i := 0; ; i++ {
		p := v.Peers()[0]
		if p.State == "out-of-sync" && p.DirtyRegions == int64(c.size/testConfig().RegionSize) {
			break
		}
		if i > 5000 {
			t.Fatalf("the owner never failed the lost copy: %+v", p)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	c.identical("a", "b")
}
