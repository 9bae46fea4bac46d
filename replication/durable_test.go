package replication

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/hatgt/hatgt/blockstore"
)

// crashCopy gives node a blockstore.Crash copy (a disk with a volatile
// cache) holding what its memory copy holds, durable.
func (c *testCluster) crashCopy(node NodeID) *blockstore.Crash {
	c.t.Helper()
	st := blockstore.NewCrash(c.size)
	if _, err := st.WriteAt(c.read(node, 0, c.size), 0); err != nil {
		c.t.Fatal(err)
	}
	if err := st.Flush(); err != nil {
		c.t.Fatal(err)
	}
	c.mirrors[node].AddLUN(testLUN, st, c.mirrors[node].Newest(testLUN))
	return st
}

// powerLossOnFlush serves node's mirror, except that while armed, the
// flush number at (counting from 1 since armed) finds the machine losing
// power: the copy's cache is gone and the connection breaks, unanswered.
type powerLossOnFlush struct {
	mu      sync.Mutex
	armed   bool
	at, n   int
	crashed int
}

func (c *testCluster) powerLossOnFlush(node NodeID, st *blockstore.Crash, owner NodeID) *powerLossOnFlush {
	pl := &powerLossOnFlush{}
	m := c.mirrors[node]
	c.net.Register(node, func(req *Message) *Message {
		if req.Type == MsgFlush {
			pl.mu.Lock()
			crash := false
			if pl.armed {
				pl.n++
				crash = pl.n == pl.at
			}
			if crash {
				pl.armed = false
				pl.crashed++
			}
			pl.mu.Unlock()
			if crash {
				st.Crash()
				c.net.Disconnect(owner, node)
				return nil
			}
		}
		return m.Handle(req)
	})
	return pl
}

func (pl *powerLossOnFlush) arm(at int) {
	pl.mu.Lock()
	pl.armed, pl.at, pl.n = true, at, 0
	pl.mu.Unlock()
}

func sameStores(t *testing.T, what string, a, b Store) {
	t.Helper()
	x, y := make([]byte, a.Size()), make([]byte, b.Size())
	if _, err := a.ReadAt(x, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadAt(y, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		i := 0
		for x[i] == y[i] {
			i++
		}
		t.Fatalf("%s: the copies differ first at byte %d (region %d)", what, i, int64(i)/testConfig().RegionSize)
	}
}

// Invariant 8: what a resync sent counts as on the copy only once a flush
// made it durable there. The copy's machine loses power just before the
// resync's final flush: the regions it had been sent (or, when comparing,
// found equal in its cache) are gone, and the next resync must copy them
// again instead of marking the copy in sync without them. After the
// resync that completes, a further power loss loses nothing.
func TestResyncSurvivesMirrorPowerLoss(t *testing.T) {
	for _, tc := range []struct {
		name    string
		compare bool
	}{{"copy", false}, {"compare", true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t, 1<<20, "a", "b")
			rs := testConfig().RegionSize
			st := c.crashCopy("b")
			pl := c.powerLossOnFlush("b", st, "a")
			v := c.open("a", Config{}, nil)
			if _, err := v.WriteAt(pattern(1, int(c.size)), 0); err != nil {
				t.Fatal(err)
			}
			if err := v.Flush(); err != nil {
				t.Fatal(err)
			}
			if tc.compare {
				// Regions 0-3 taken by b into its cache, never flushed:
				// when b fails they are compared, found equal, ...
				if _, err := v.WriteAt(pattern(2, int(4*rs)), 0); err != nil {
					t.Fatal(err)
				}
			}
			c.cut("a", "b")
			for i, r := range []int64{6, 9, 13} {
				if _, err := v.WriteAt(pattern(uint64(10+i), 8192), r*rs+4096); err != nil {
					t.Fatal(err)
				}
			}
			if c.view().IsInSync("b") {
				t.Fatal("b not dropped")
			}
			c.net.Heal("a", "b")

			pl.arm(1) // the resync's first flush is its last (every dirty region sent)
			if err := v.Resync(context.Background(), "b"); err == nil {
				t.Fatal("the resync succeeded although b lost power before its flush")
			}
			if pl.crashed != 1 || c.view().IsInSync("b") {
				t.Fatalf("power losses %d; view %+v", pl.crashed, c.view())
			}
			// ... and lost with b's cache.
			if err := v.Resync(context.Background(), "b"); err != nil {
				t.Fatal(err)
			}
			if !c.view().IsInSync("b") {
				t.Fatal("b not in sync after the second resync")
			}
			sameStores(t, "after the second resync", c.stores["a"], st)
			st.Crash()
			sameStores(t, "after a power loss of the resynced copy", c.stores["a"], st)
		})
	}
}

// A long resync flushes the copy every resyncFlush bytes and clears the
// regions of each batch only after its flush: a power loss during the
// second batch costs the second batch (and what was never copied), not
// the first.
func TestResyncClearsRegionsAfterTheirFlush(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	rs := testConfig().RegionSize
	st := c.crashCopy("b")
	pl := c.powerLossOnFlush("b", st, "a")
	v := c.open("a", Config{}, nil)
	v.resyncFlush = 2 * rs
	c.cut("a", "b")
	dirty := []int64{1, 3, 5, 7, 9}
	for _, r := range dirty {
		if _, err := v.WriteAt(pattern(uint64(r), 4096), r*rs); err != nil {
			t.Fatal(err)
		}
	}
	c.net.Heal("a", "b")
	pl.arm(2) // b loses power at the flush after regions 5 and 7
	if err := v.Resync(context.Background(), "b"); err == nil {
		t.Fatal("the resync succeeded although b lost power")
	}
	v.mu.Lock()
	d := v.peers["b"].dirty
	v.mu.Unlock()
	for _, r := range dirty {
		if want := r >= 5; d.IsDirty(r) != want {
			t.Fatalf("region %d dirty %v after the power loss, want %v (1 and 3 were flushed, 5 and 7 lost, 9 not sent)", r, d.IsDirty(r), want)
		}
	}
	before := c.mirrors["b"].Stats(testLUN).ResyncBytes
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if got := c.mirrors["b"].Stats(testLUN).ResyncBytes - before; got != uint64(3*rs) {
		t.Fatalf("the second resync copied %d bytes, want 3 regions", got)
	}
	sameStores(t, "after the second resync", c.stores["a"], st)
	st.Crash()
	sameStores(t, "after a power loss of the resynced copy", c.stores["a"], st)
}

// A region marked copied stays dirty until ClearCopied, which clears only
// the copied regions no Mark, Merge or SetAll touched since: a write that
// failed on the copy after the region was sent keeps it dirty.
func TestDirtyMapCopiedMarks(t *testing.T) {
	d := NewDirtyMap(1<<20, 64<<10)
	d.Mark(0, 6*65536) // regions 0-5
	d.Copied(0)
	d.Copied(1)
	d.Copied(2)
	d.Copied(3)
	d.Copied(9) // clean: no mark
	if got := d.NextUncopied(0); got != 4 {
		t.Fatalf("NextUncopied %d, want 4", got)
	}
	if d.Count() != 6 || d.copiedCount() != 4 {
		t.Fatalf("count %d copied %d: copied regions must stay dirty until cleared", d.Count(), d.copiedCount())
	}
	d.Mark(65536+100, 10) // a write to region 1 failed on the copy
	o := NewDirtyMap(1<<20, 64<<10)
	o.Mark(2*65536, 1)
	d.Merge(o) // region 2 was in the copy's cache when it failed
	if got := d.copiedCount(); got != 2 {
		t.Fatalf("%d regions copied after the marks, want 2 (0 and 3)", got)
	}
	if n := d.ClearCopied(); n != 2 || d.copiedCount() != 0 {
		t.Fatalf("ClearCopied cleared %d, want 2 (regions 0 and 3)", n)
	}
	for r, want := range []bool{false, true, true, false, true, true, false} {
		if d.IsDirty(int64(r)) != want {
			t.Fatalf("region %d dirty %v, want %v", r, d.IsDirty(int64(r)), want)
		}
	}
	d.Copied(4)
	d.ForgetCopied()
	if d.ClearCopied() != 0 || !d.IsDirty(4) || d.NextUncopied(0) != 1 {
		t.Fatal("ForgetCopied did not forget")
	}
	d.Copied(4)
	d.SetAll()
	if d.ClearCopied() != 0 || d.Count() != d.Regions() {
		t.Fatal("SetAll left a copied mark")
	}
}

// A region Repair rewrote on an in-sync copy is not durable there before
// the copy's next flush: a copy that fails that flush gets it in its dirty
// map, like a write it took since its last flush.
func TestRepairedRegionIsUnflushedUntilFlush(t *testing.T) {
	c := newTestCluster(t, 512<<10, "a", "b")
	rs := testConfig().RegionSize
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
	if _, err := v.WriteAt(pattern(1, int(c.size)), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	c.stores["b"].WriteAt(make([]byte, 100), 3*rs+7) // silent corruption of region 3
	rep, err := v.Repair(context.Background(), "b")
	if err != nil || len(rep.Divergent) != 1 || rep.Divergent[0] != 3 {
		t.Fatalf("repair: %+v %v", rep, err)
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
	if !d.IsDirty(3) || d.Count() != 1 {
		t.Fatalf("dirty: region 3 %v, count %d; want region 3 only", d.IsDirty(3), d.Count())
	}
}
