package replication

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
)

// Invariant 6: a mirror that comes back is caught up from the dirty-region
// map — exactly the regions it missed, not a full copy — and rejoins the
// in-sync set through the coordinator only once identical.
func TestResyncCopiesExactlyTheDirtyRegions(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	rs := testConfig().RegionSize
	if _, err := v.WriteAt(pattern(1, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	c.cut("a", "c")
	// Regions 2, 3 (one write across both), 7 and 9 (twice).
	writes := []struct{ off, n int64 }{{2*rs + rs/2, rs}, {7 * rs, 4096}, {9 * rs, 8192}, {9*rs + 4096, 4096}}
	for i, w := range writes {
		if _, err := v.WriteAt(pattern(uint64(10+i), int(w.n)), w.off); err != nil {
			t.Fatal(err)
		}
	}
	if c.view().IsInSync("c") {
		t.Fatal("c not dropped")
	}
	c.net.Heal("a", "c")
	before := c.mirrors["c"].Stats(testLUN)
	if err := v.Resync(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	got := c.mirrors["c"].Stats(testLUN).ResyncBytes - before.ResyncBytes
	if want := uint64(4 * rs); got != want {
		t.Fatalf("resync copied %d bytes, want %d (4 regions)", got, want)
	}
	c.identical("a", "b", "c")
	if !c.view().IsInSync("c") {
		t.Fatal("c not marked in sync")
	}
	if !hasPeerState(v, "c", "in-sync") {
		t.Fatalf("owner's peers: %+v", v.Peers())
	}
	p, ok := c.coord.Progress(testLUN, "c")
	if !ok || !p.Done || p.RegionsDone != 4 || p.BytesCopied != 4*rs {
		t.Fatalf("reported progress %+v", p)
	}
	// In sync again: its next failure is a drop through the coordinator.
	c.cut("a", "c")
	if _, err := v.WriteAt(pattern(99, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("c") {
		t.Fatal("c not dropped the second time")
	}
}

// New writes keep flowing during a resync and reach the resyncing copy;
// the result is identical.
func TestResyncWhileWriting(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	c.cut("a", "b")
	for i := range 16 {
		if _, err := v.WriteAt(pattern(uint64(i), 16<<10), int64(i)*(64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	c.net.Heal("a", "b")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			off := int64(i*7919%240) * 4096
			if _, err := v.WriteAt(pattern(uint64(1000+i), 8192), off); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	err := v.Resync(context.Background(), "b")
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	c.identical("a", "b")
	if !c.view().IsInSync("b") {
		t.Fatal("b not in sync")
	}
}

// A new or wiped copy gets a full copy; Verify then finds the copies equal
// and, after an injected corruption, names exactly the corrupted region.
func TestFullCopyAndVerify(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v0 := c.open("a", Config{}, nil)
	if _, err := v0.WriteAt(pattern(5, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	v0.Close()
	// d joins as a new, empty replica: out of sync, no dirty map kept.
	c.addNode("d")
	view := c.view()
	view.Replicas = append(view.Replicas, "d")
	view.Epoch++ // a restarted owner serves a new epoch
	c.coord.SetView(testLUN, view)
	v := c.open("a", Config{}, nil)
	if err := v.Resync(context.Background(), "d"); err != nil {
		t.Fatal(err)
	}
	if got := c.mirrors["d"].Stats(testLUN).ResyncBytes; got != 1<<20 {
		t.Fatalf("full copy sent %d bytes, want %d", got, 1<<20)
	}
	c.identical("a", "b", "d")

	rep, err := v.Verify(context.Background(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Regions != 16 || len(rep.Divergent) != 0 {
		t.Fatalf("verify of identical copies: %+v", rep)
	}
	c.stores["b"].WriteAt([]byte{0xff ^ c.read("b", 5*65536+123, 1)[0]}, 5*65536+123)
	rep, err = v.Verify(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Divergent) != 1 || rep.Divergent[0] != 5 {
		t.Fatalf("verify after corrupting region 5: %+v", rep)
	}
}

// A resync that loses its mirror stops with the map intact (plus what was
// in flight) and can be restarted to completion.
func TestResyncInterruptedAndRestarted(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(1, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	c.net.Heal("a", "b")
	var n int
	var mu sync.Mutex
	m := c.mirrors["b"]
	c.net.Register("b", func(req *Message) *Message {
		if req.Flags&FlagResync != 0 {
			mu.Lock()
			n++
			cut := n == 10
			mu.Unlock()
			if cut {
				return reply(req, StatusIOError)
			}
		}
		return m.Handle(req)
	})
	if err := v.Resync(context.Background(), "b"); !errors.Is(err, ErrPeerFailed) {
		t.Fatalf("interrupted resync: %v", err)
	}
	if !hasPeerState(v, "b", "out-of-sync") || c.view().IsInSync("b") {
		t.Fatalf("after the failure: %+v", v.Peers())
	}
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	c.identical("a", "b")
	if err := v.Resync(context.Background(), "b"); !errors.Is(err, ErrNotSyncing) {
		t.Fatalf("resync of an in-sync copy: %v", err)
	}
}

// The dirty bit of a write a mirror missed is on disk before the write is
// acknowledged, and a restarted owner resumes from it instead of a full
// copy.
func TestDirtyMapPersistedBeforeAck(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	cfg := testConfig()
	cfg.StateDir = t.TempDir()
	v := c.open("a", cfg, nil)
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(1, 4096), 3*65536); err != nil {
		t.Fatal(err)
	}
	// Read the file as a restarted owner would, before any Close.
	d, full, err := OpenDirtyMap(v.dirtyPath("b"), 1<<20, cfg.RegionSize)
	if err != nil || full {
		t.Fatalf("dirty map after the ack: full=%v err=%v", full, err)
	}
	if !d.IsDirty(3) || d.Count() != 1 {
		t.Fatalf("persisted map: region 3 %v, count %d", d.IsDirty(3), d.Count())
	}
	v.Close()
	c.net.Heal("a", "b")
	c.coord.NewEpoch(testLUN, "a")
	v2 := c.open("a", cfg, nil)
	before := c.mirrors["b"].Stats(testLUN).ResyncBytes
	if err := v2.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if got := c.mirrors["b"].Stats(testLUN).ResyncBytes - before; got != uint64(cfg.RegionSize) {
		t.Fatalf("restarted owner copied %d bytes, want one region", got)
	}
	c.identical("a", "b")
	if _, err := os.Stat(v2.dirtyPath("b")); !os.IsNotExist(err) {
		t.Fatalf("dirty map of an in-sync copy still on disk: %v", err)
	}
}

// A copy that fails while its MarkInSync is being committed: once the join
// commits, it is dropped through the coordinator before the write it
// missed is acknowledged, never silently left in sync.
func TestFailureWhileJoining(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	c.net.Heal("a", "b")
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
	<-resynced
	evs := c.coord.Events()
	join, drop, ack := indexOf(evs, "insync lun=1 epoch=1 node=b"), lastIndexOf(evs, "drop lun=1 epoch=1 node=b"), indexOf(evs, "ack")
	if join < 0 || drop < join || ack < drop {
		t.Fatalf("want join < drop < ack, got %d %d %d: %v", join, drop, ack, evs)
	}
	if c.view().IsInSync("b") {
		t.Fatal("b left in sync after missing a write")
	}
}

// The resync rate limiter sleeps on the injected clock.
func TestResyncRateLimitUsesClock(t *testing.T) {
	clk := NewManualClock(testStart)
	b := newTokenBucket(clk, 1<<20, 64<<10) // 1 MiB/s, burst 102.4 KiB
	ctx := context.Background()
	if err := b.wait(ctx, 64<<10); err != nil { // within the burst
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.wait(ctx, 1<<20) }() // 1 MiB: in debt
	waitUntil(t, func() bool { return clk.Pending() == 1 })
	select {
	case err := <-done:
		t.Fatalf("took 1 MiB beyond the burst without waiting: %v", err)
	default:
	}
	clk.Advance(2 * second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A wiped copy gets everything again with ResyncFull, even regions its
// dirty map did not name.
func TestResyncFullAfterWipe(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(3, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(4, 4096), 0); err != nil {
		t.Fatal(err)
	}
	c.net.Heal("a", "b")
	c.stores["b"].Unmap(0, 1<<20) // the disk was replaced
	before := c.mirrors["b"].Stats(testLUN).ResyncBytes
	if err := v.ResyncFull(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if got := c.mirrors["b"].Stats(testLUN).ResyncBytes - before; got != 1<<20 {
		t.Fatalf("full resync sent %d bytes", got)
	}
	c.identical("a", "b")
}

// A mirror that fails a flush may have lost its cache: the regions it took
// since its previous flush become dirty, and it is dropped.
func TestFlushFailureMarksUnflushed(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	m := c.mirrors["b"]
	var mu sync.Mutex
	failFlush := false
	c.net.Register("b", func(req *Message) *Message {
		mu.Lock()
		fail := failFlush && req.Type == MsgFlush
		mu.Unlock()
		if fail {
			return reply(req, StatusIOError)
		}
		return m.Handle(req)
	})
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(1, 4096), 2*65536); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(pattern(2, 4096), 4*65536); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	failFlush = true
	mu.Unlock()
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("b") {
		t.Fatal("b still in sync after its flush failed")
	}
	v.mu.Lock()
	d := v.peers["b"].dirty
	v.mu.Unlock()
	if !d.IsDirty(4) || d.IsDirty(2) || d.Count() != 1 {
		t.Fatalf("dirty 2:%v 4:%v count %d; want region 4 only (2 was flushed before)", d.IsDirty(2), d.IsDirty(4), d.Count())
	}
}

func TestResyncAll(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c", "d")
	v := c.open("a", Config{}, nil)
	c.cut("a", "b")
	c.cut("a", "c")
	if _, err := v.WriteAt(pattern(1, 200<<10), 100<<10); err != nil {
		t.Fatal(err)
	}
	if got := c.view().InSync; len(got) != 2 {
		t.Fatalf("in sync %v", got)
	}
	c.net.Heal("a", "b")
	c.net.Heal("a", "c")
	c.net.Unregister("c") // c's node is still down: dials fail at once
	if err := v.ResyncAll(context.Background()); err == nil {
		t.Fatal("ResyncAll reported no error with c down")
	}
	if !c.view().IsInSync("b") {
		t.Fatal("b not resynced by the first ResyncAll")
	}
	c.net.Register("c", c.mirrors["c"].Handle)
	if err := v.ResyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.view().InSync; len(got) != 4 {
		t.Fatalf("in sync %v", got)
	}
	c.identical("a", "b", "c", "d")
}

// A write-back mirror that fails with writes not yet flushed gets those
// regions marked (its machine may have lost its cache), but the resync
// compares before it copies: a mirror process that died on a machine that
// stayed up still has them, so only what it missed or really lost goes over
// the wire, and the copies end identical.
func TestResyncComparesUnflushedRegions(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	rs := testConfig().RegionSize
	v := c.open("a", Config{}, nil)
	// Regions 0-3 taken by b, never flushed.
	if _, err := v.WriteAt(pattern(1, int(4*rs)), 0); err != nil {
		t.Fatal(err)
	}
	c.cut("a", "b")
	// Region 6 missed.
	if _, err := v.WriteAt(pattern(2, 4096), 6*rs); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("b") {
		t.Fatal("b not dropped")
	}
	v.mu.Lock()
	dirty := v.peers["b"].dirty.Count()
	v.mu.Unlock()
	if dirty != 5 {
		t.Fatalf("%d regions dirty, want 5 (0-3 unflushed, 6 missed)", dirty)
	}
	// b's machine lost region 1 from its cache.
	if _, err := c.stores["b"].WriteAt(make([]byte, rs), rs); err != nil {
		t.Fatal(err)
	}
	c.net.Heal("a", "b")
	before := c.mirrors["b"].Stats(testLUN)
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	after := c.mirrors["b"].Stats(testLUN)
	if got, want := after.ResyncBytes-before.ResyncBytes, uint64(2*rs); got != want {
		t.Fatalf("resync copied %d bytes, want %d (regions 1 and 6)", got, want)
	}
	if got := after.Verifies - before.Verifies; got != 5 {
		t.Fatalf("resync compared %d regions, want the 5 dirty ones", got)
	}
	c.identical("a", "b")
	if !c.view().IsInSync("b") {
		t.Fatal("b not back in sync")
	}
}
