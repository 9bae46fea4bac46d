package replication

import (
	"context"
	"slices"
	"testing"
	"time"
)

// The old owner a dies with a write in flight that reached only c (and
// one that reached only its own store). The new owner b opens with
// CheckOnOpen: Repair finds and rewrites exactly c's divergent region, and
// a, unreachable at open, comes back through a compare resync that copies
// only the region that differs.
func TestTakeoverRepairsInFlightWrites(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	rs := testConfig().RegionSize
	base := pattern(1, int(c.size))
	for _, n := range c.nodes {
		if _, err := c.stores[n].WriteAt(base, 0); err != nil {
			t.Fatal(err)
		}
	}
	// In flight at a's crash, acknowledged to nobody.
	if _, err := c.stores["c"].WriteAt(pattern(2, 4096), 3*rs+100); err != nil {
		t.Fatal(err)
	}
	if _, err := c.stores["a"].WriteAt(pattern(3, 4096), 5*rs); err != nil {
		t.Fatal(err)
	}
	c.net.Unregister("a")
	c.coord.NewEpoch(testLUN, "b")

	cfg := testConfig()
	cfg.CheckOnOpen = true
	v := c.open("b", cfg, nil)
	// The drop of a commits in the background; a write waits for it.
	if _, err := v.WriteAt(base[:4096], 0); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("a") {
		t.Fatal("the unreachable old owner is still in sync")
	}
	reps, err := v.RepairAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0].Node != "c" || !slices.Equal(reps[0].Divergent, []int64{3}) {
		t.Fatalf("repair reports %+v, want c with region 3 repaired", reps)
	}
	c.identical("b", "c")

	c.net.Register("a", c.mirrors["a"].Handle)
	if err := v.Resync(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	p, _ := v.Progress("a")
	if p.BytesCopied != rs {
		t.Fatalf("compare resync copied %d bytes, want the one divergent region (%d)", p.BytesCopied, rs)
	}
	c.identical("b", "a", "c")
	if !c.view().IsInSync("a") {
		t.Fatal("a not back in sync")
	}
}

// Repair of an identical in-sync copy rewrites nothing; Repair of a copy
// that is not in sync is refused.
func TestRepairIdenticalAndRefusals(t *testing.T) {
	c := newTestCluster(t, 512<<10, "a", "b")
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(4, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	rep, err := v.Repair(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Divergent) != 0 || rep.Regions != 512/64 {
		t.Fatalf("repair of an identical copy: %+v", rep)
	}
	if _, err := v.Repair(context.Background(), "zz"); err == nil {
		t.Fatal("repair of an unknown copy succeeded")
	}
}

// A replica added to the view while the volume serves is a new copy: it
// gets every region; a removed out-of-sync replica is forgotten.
func TestViewAddsAndRemovesCopies(t *testing.T) {
	c := newTestCluster(t, 512<<10, "a", "b")
	v := c.open("a", Config{}, nil)
	data := pattern(5, int(c.size))
	if _, err := v.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	c.addNode("d")
	view := c.view()
	view.Replicas = append(view.Replicas, "d")
	c.coord.SetView(testLUN, view)
	waitPeer := func(node NodeID, want string) {
		t.Helper()
		for range 5000 {
			for _, p := range v.Peers() {
				if p.Node == node && p.State == want {
					return
				}
			}
			if want == "" && !slices.ContainsFunc(v.Peers(), func(p PeerStatus) bool { return p.Node == node }) {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Fatalf("peer %s never reached state %q: %+v", node, want, v.Peers())
	}
	waitPeer("d", "out-of-sync")
	if err := v.Resync(context.Background(), "d"); err != nil {
		t.Fatal(err)
	}
	if p, _ := v.Progress("d"); p.BytesCopied != c.size {
		t.Fatalf("new copy got %d bytes, want all %d", p.BytesCopied, c.size)
	}
	c.identical("a", "b", "d")

	// d leaves the placement after it fell out of sync.
	c.cut("a", "d")
	if _, err := v.WriteAt(pattern(6, 4096), 0); err != nil {
		t.Fatal(err)
	}
	view = c.view()
	view.Replicas = slices.DeleteFunc(slices.Clone(view.Replicas), func(n NodeID) bool { return n == "d" })
	c.coord.SetView(testLUN, view)
	waitPeer("d", "")
}

// A copy on a node the cluster records down is not dialed at Open (its
// mirror never hears the new epoch), counts as unreachable at once, and
// with CheckOnOpen comes back through a compare resync.
func TestOpenSkipsCopiesOnDownNodes(t *testing.T) {
	c := newTestCluster(t, 512<<10, "a", "b", "c")
	c.coord.NewEpoch(testLUN, "b")
	before := c.mirrors["a"].Newest(testLUN)
	cfg := testConfig()
	cfg.CheckOnOpen = true
	var asked []NodeID
	cfg.Down = func(n NodeID) bool { asked = append(asked, n); return n == "a" }
	v := c.open("b", cfg, nil)
	if _, err := v.WriteAt(pattern(5, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if got := c.mirrors["c"].Newest(testLUN); got == before {
		t.Fatalf("the up node's mirror still at epoch %d after open", got)
	}
	if got := c.mirrors["a"].Newest(testLUN); got != before {
		t.Fatalf("the down node's mirror saw epoch %d at open (had %d): it was dialed", got, before)
	}
	if c.view().IsInSync("a") || !c.view().IsInSync("c") {
		t.Fatalf("in sync after open: %v, want c and not a", c.view().InSync)
	}
	if !slices.Contains(asked, "a") || !slices.Contains(asked, "c") {
		t.Fatalf("Down asked about %v, want every in-sync copy", asked)
	}
	if err := v.Resync(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if p, _ := v.Progress("a"); p.BytesCopied != testConfig().RegionSize {
		t.Fatalf("compare resync of the down copy copied %d bytes, want the one region written (%d)", p.BytesCopied, testConfig().RegionSize)
	}
	c.identical("b", "a", "c")
}

// The old owner a dies with a write in flight that reached only c. The new
// owner b opens with CheckOnOpen, but c fails before any Repair compared
// it (found by the whole-cluster simulator: the restarted owner's repair
// was cut short by its mirrors' crash). c must not come back in sync with
// only the regions it missed since: its resync compares every region and
// rewrites the one the old owner left different.
func TestCopyThatFailsBeforeItsRepairIsComparedInFull(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	rs := testConfig().RegionSize
	base := pattern(1, int(c.size))
	for _, n := range c.nodes {
		if _, err := c.stores[n].WriteAt(base, 0); err != nil {
			t.Fatal(err)
		}
	}
	// In flight at a's crash, acknowledged to nobody, on c only.
	if _, err := c.stores["c"].WriteAt(pattern(2, 4096), 3*rs+100); err != nil {
		t.Fatal(err)
	}
	c.net.Unregister("a")
	c.coord.NewEpoch(testLUN, "b")
	cfg := testConfig()
	cfg.CheckOnOpen = true
	v := c.open("b", cfg, nil)
	if !c.view().IsInSync("c") {
		t.Fatal("c, reachable at open, is not in sync")
	}
	// c fails before the repair: a write (to region 0) finds it gone.
	c.cut("b", "c")
	if _, err := v.WriteAt(pattern(4, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("c") {
		t.Fatal("c still in sync after it failed a write")
	}
	c.net.Heal("b", "c")
	if err := v.Resync(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	c.identical("b", "c")
	if p, _ := v.Progress("c"); p.BytesCopied != 2*rs {
		t.Fatalf("c's resync copied %d bytes, want the region it missed and the old owner's (%d)", p.BytesCopied, 2*rs)
	}
}
