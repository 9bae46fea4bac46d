package replication

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// failInSyncAfterCommit makes node's MarkInSync commit and then return
// err, as a proposal that timed out, or whose leader lost its leadership
// after appending it, does; drop (nil: none) fails DropFromInSync of node
// before it commits.
func failInSyncAfterCommit(node NodeID, err, drop error) ProposalFault {
	return func(op string, _ LUNID, n NodeID) (before, after error) {
		switch {
		case n != node:
		case op == "insync":
			return nil, err
		case op == "drop":
			return drop, nil
		}
		return nil, nil
	}
}

// ackedOnInSync writes data at off and checks, once it is acknowledged,
// that every copy Raft lists in sync holds it.
func (c *testCluster) ackedOnInSync(v *Volume, data []byte, off int64) {
	c.t.Helper()
	if _, err := v.WriteAt(data, off); err != nil {
		c.t.Fatal(err)
	}
	c.coord.Record("ack")
	view := c.view()
	for _, n := range view.InSync {
		if !bytes.Equal(c.read(n, off, int64(len(data))), data) {
			c.t.Fatalf("an acknowledged write at %d is not on %s, which Raft lists in sync (view %+v, events %v)", off, n, view, c.coord.Events())
		}
	}
}

// Invariant 1 when MarkInSync fails although it committed: the outcome is
// unknown, so the owner drops the copy through Raft before it acknowledges
// any write the copy misses. Every acknowledged write is then on every
// copy Raft lists in sync, and a later resync brings the copy back.
func TestAmbiguousMarkInSyncDropsTheCopy(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	cfg := testConfig()
	cfg.StateDir = t.TempDir()
	v := c.open("a", cfg, nil)
	c.cut("a", "b")
	c.ackedOnInSync(v, pattern(1, 8192), 0)
	c.net.Heal("a", "b")
	c.coord.SetProposalFault(failInSyncAfterCommit("b", context.DeadlineExceeded, nil))
	if err := v.Resync(context.Background(), "b"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("resync with an ambiguous MarkInSync: %v", err)
	}
	if indexOf(c.coord.Events(), "insync lun=1 epoch=1 node=b") < 0 {
		t.Fatalf("the MarkInSync did not commit: %v", c.coord.Events())
	}
	for i := range 6 {
		c.ackedOnInSync(v, pattern(uint64(10+i), 4096), int64(i)*3*65536+512)
	}
	evs := c.coord.Events()
	join, drop := lastIndexOf(evs, "insync lun=1 epoch=1 node=b"), lastIndexOf(evs, "drop lun=1 epoch=1 node=b")
	ack := indexOf(evs[join+1:], "ack") + join + 1 // the first acknowledgement after the join
	if drop < join || ack <= join || ack < drop {
		t.Fatalf("want join < drop < ack, got %d %d %d: %v", join, drop, ack, evs)
	}
	if !hasPeerState(v, "b", "out-of-sync") {
		t.Fatalf("peers %+v", v.Peers())
	}
	c.coord.SetProposalFault(nil)
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if !c.view().IsInSync("b") {
		t.Fatal("b not back in sync")
	}
	c.identical("a", "b", "c")
}

// If the drop that settles an ambiguous MarkInSync cannot commit, the
// owner stops serving: Raft may list the copy in sync, and it misses the
// write.
func TestAmbiguousMarkInSyncUndroppableDeposes(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	c.net.Heal("a", "b")
	c.coord.SetProposalFault(failInSyncAfterCommit("b", ErrNoQuorum, ErrNoQuorum))
	if err := v.Resync(context.Background(), "b"); err == nil {
		t.Fatal("resync reported success")
	}
	if !c.view().IsInSync("b") {
		t.Fatal("the MarkInSync did not commit")
	}
	if _, err := v.WriteAt(pattern(2, 4096), 65536); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("write while b's drop cannot commit: %v, want ErrNotOwner", err)
	}
	if v.Serving() == nil {
		t.Fatal("the owner still serves")
	}
}

// A copy that fails while joining, whose MarkInSync then fails although
// it committed: it is dropped before the write it missed is acknowledged
// (the join "failed", but may not have).
func TestFailureWhileAmbiguousJoin(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	c.net.Heal("a", "b")
	c.coord.SetProposalFault(failInSyncAfterCommit("b", ErrNoQuorum, nil))
	c.coord.HoldCommits()
	resynced := make(chan error, 1)
	go func() { resynced <- v.Resync(context.Background(), "b") }()
	waitUntil(t, func() bool { return hasPeerState(v, "b", "joining") })
	c.cut("a", "b")
	acked := make(chan error, 1)
	go func() {
		_, err := v.WriteAt(pattern(2, 4096), 65536)
		c.coord.Record("ack")
		acked <- err
	}()
	waitUntil(t, func() bool { return hasPeerState(v, "b", "dropping") })
	c.coord.ReleaseCommits()
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
	if err := <-resynced; err == nil {
		t.Fatal("resync reported success")
	}
	evs := c.coord.Events()
	join, drop, ack := indexOf(evs, "insync lun=1 epoch=1 node=b"), lastIndexOf(evs, "drop lun=1 epoch=1 node=b"), indexOf(evs, "ack")
	if join < 0 || drop < join || ack < drop {
		t.Fatalf("want join < drop < ack, got %d %d %d: %v", join, drop, ack, evs)
	}
	if c.view().IsInSync("b") {
		t.Fatal("b left in sync after missing a write")
	}
}

// Raft lists in sync a copy the owner does not replicate to (an in-sync
// change of unknown outcome, or someone else's): the owner does not leave
// it so; it drops the copy through Raft, then resyncs it as usual.
func TestRaftListingAnOutOfSyncCopyIsDropped(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	c.net.Heal("a", "b")
	view := c.view()
	view.InSync = []NodeID{"a", "b"}
	c.coord.SetView(testLUN, view)
	waitUntil(t, func() bool { return !c.view().IsInSync("b") && hasPeerState(v, "b", "out-of-sync") })
	c.ackedOnInSync(v, pattern(2, 4096), 65536)
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	c.identical("a", "b")
}

// The same with the copy's dirty map loaded from disk by a restarted
// owner (a map no write marked since: generation 0): the drop persists it
// and completes instead of waiting for a generation that never comes.
func TestAmbiguousMarkInSyncWithLoadedMap(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	cfg := testConfig()
	cfg.StateDir = t.TempDir()
	v := c.open("a", cfg, nil)
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(1, 8192), 0); err != nil {
		t.Fatal(err)
	}
	v.Close()
	c.coord.NewEpoch(testLUN, "a")
	c.net.Heal("a", "b")
	v = c.open("a", cfg, nil) // b's map comes from the file
	c.coord.SetProposalFault(failInSyncAfterCommit("b", ErrNoQuorum, nil))
	if err := v.Resync(context.Background(), "b"); err == nil {
		t.Fatal("resync reported success")
	}
	// The drop completes by itself (no write comes to mark the map).
	waitUntil(t, func() bool { return hasPeerState(v, "b", "out-of-sync") })
	if _, err := v.WriteAt(pattern(2, 4096), 65536); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("b") || !hasPeerState(v, "b", "out-of-sync") {
		t.Fatalf("view %+v, peers %+v", c.view(), v.Peers())
	}
}
