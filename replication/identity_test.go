package replication

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/hatgt/hatgt/blockstore"
)

// The identity block round-trips, and whatever is not a valid block of
// this LUN at this size reads as no identity.
func TestCopyStoreIdentity(t *testing.T) {
	const size = 64 << 10
	raw := blockstore.NewMemory(size + IdentitySize)
	cs, err := NewCopyStore(raw, 7, size)
	if err != nil {
		t.Fatal(err)
	}
	if !cs.Generation().IsZero() || !errors.Is(cs.IdentityProblem(), ErrNoIdentity) {
		t.Fatalf("blank copy: generation %v, problem %v", cs.Generation(), cs.IdentityProblem())
	}
	if cs.Size() != size {
		t.Fatalf("size %d, want the LUN's %d", cs.Size(), size)
	}
	g := NewGeneration()
	if err := cs.SetGeneration(g); err != nil {
		t.Fatal(err)
	}
	if again, err := NewCopyStore(raw, 7, size); err != nil || again.Generation() != g {
		t.Fatalf("reopened: %v, %v; want %v", again.Generation(), err, g)
	}
	if s, err := ParseGeneration(g.String()); err != nil || s != g {
		t.Fatalf("ParseGeneration(%q) = %v, %v", g.String(), s, err)
	}
	// Data never reaches the block, and the block is not data.
	if _, err := cs.WriteAt(make([]byte, 1), size); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write past the data: %v", err)
	}
	if _, err := cs.ReadAt(make([]byte, 2), size-1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("read into the block: %v", err)
	}
	if err := cs.Unmap(0, size+1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("unmap into the block: %v", err)
	}
	if err := cs.Unmap(0, size); err != nil {
		t.Fatal(err)
	}
	if gen, err := ReadIdentity(raw, 7, size); gen != g || err != nil {
		t.Fatalf("the unmap of the whole LUN touched the block: %v, %v", gen, err)
	}
	// GET LBA STATUS sees the data only: all of it deallocated, though
	// the identity block after it is written.
	if mapped, n, err := cs.MappedExtent(0); mapped || n != size || err != nil {
		t.Fatalf("after the unmap of the whole LUN: mapped %v for %d bytes (%v), want unmapped for %d", mapped, n, err, size)
	}
	if _, _, err := cs.MappedExtent(size); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("extent of the block: %v", err)
	}
	for name, check := range map[string]func() (Generation, error){
		"another LUN":   func() (Generation, error) { return ReadIdentity(raw, 8, size) },
		"another size":  func() (Generation, error) { return ReadIdentity(blockstore.NewMemory(2*size+IdentitySize), 7, size) },
		"a flipped bit": func() (Generation, error) { raw.WriteAt([]byte{0xff}, size+40); return ReadIdentity(raw, 7, size) },
	} {
		if gen, err := check(); !gen.IsZero() || !errors.Is(err, ErrNoIdentity) {
			t.Errorf("%s: generation %v, %v; want none", name, gen, err)
		}
	}
	if _, err := NewCopyStore(blockstore.NewMemory(size), 7, size); err == nil {
		t.Fatal("a store without room for the identity block was taken")
	}
}

// A mirror reports its copy's generation in the hello reply, and writes
// the one a hello carries before it answers; a malformed one is refused.
func TestMirrorHelloGeneration(t *testing.T) {
	c := newIdentityCluster(t, 256<<10, "a", "b")
	m := c.mirrors["b"]
	rep := m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: 1})
	if rep.Status != StatusOK || !bytes.Equal(rep.Payload, make([]byte, 16)) {
		t.Fatalf("hello to a blank copy: %v %x", rep.Status, rep.Payload)
	}
	g := NewGeneration()
	rep = m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: 1, Payload: g[:]})
	if rep.Status != StatusOK || !bytes.Equal(rep.Payload, g[:]) || c.copies["b"].Generation() != g {
		t.Fatalf("hello with a generation: %v %x, copy has %v", rep.Status, rep.Payload, c.copies["b"].Generation())
	}
	if gen, _ := ReadIdentity(c.stores["b"], testLUN, c.size); gen != g {
		t.Fatalf("the new generation is not in the identity block: %v", gen)
	}
	for _, bad := range [][]byte{make([]byte, 16), make([]byte, 15), make([]byte, 17)} {
		if rep := m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: 1, Payload: bad}); rep.Status != StatusBadRequest {
			t.Errorf("hello with a %d-byte payload %x: %v", len(bad), bad, rep.Status)
		}
	}
	// A stale hello changes nothing.
	m.Fence(testLUN, 5)
	if rep := m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: 4, Payload: NewGeneration().Bytes()}); rep.Status != StatusStaleEpoch || c.copies["b"].Generation() != g {
		t.Fatalf("stale hello: %v, generation %v", rep.Status, c.copies["b"].Generation())
	}
	// A lost copy takes a new generation only with a full copy's hello.
	m.MarkLost(testLUN)
	if rep := m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: 5, Payload: NewGeneration().Bytes()}); rep.Status != StatusCopyLost || c.copies["b"].Generation() != g {
		t.Fatalf("hello to a lost copy: %v, generation %v", rep.Status, c.copies["b"].Generation())
	}
	g2 := NewGeneration()
	if rep := m.Handle(&Message{Type: MsgHello, Flags: FlagFull, LUN: testLUN, Epoch: 5, Payload: g2[:]}); rep.Status != StatusOK || m.Lost(testLUN) || c.copies["b"].Generation() != g2 {
		t.Fatalf("full hello to a lost copy: %v, lost %v, generation %v", rep.Status, m.Lost(testLUN), c.copies["b"].Generation())
	}
}

// The first owner of a fresh LUN gives every copy a generation and
// records them all before it serves; each copy holds the one recorded.
func TestFreshLUNRecordsGenerations(t *testing.T) {
	c := newIdentityCluster(t, 256<<10, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	view := c.view()
	if view.Fresh {
		t.Fatal("still fresh after the first owner's Open")
	}
	seen := map[Generation]bool{}
	for _, n := range c.nodes {
		g := view.Gens[n]
		if g.IsZero() || g != c.copies[n].Generation() || seen[g] {
			t.Fatalf("%s: recorded %v, copy holds %v (recorded: %v)", n, g, c.copies[n].Generation(), view.Gens)
		}
		seen[g] = true
	}
	if !view.IsInSync("b") || !view.IsInSync("c") {
		t.Fatalf("view %+v", view)
	}
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	// Recorded before the volume served: no write precedes it.
	ev := c.coord.Events()
	if i, w := indexOf(ev, "generations"), indexOf(ev, "write"); i < 0 || (w >= 0 && w < i) {
		t.Fatalf("events %v", ev)
	}
}

// The hole of invariant 7: a mirror's store is swapped for a blank one of
// the same size while its node is down and the owner keeps writing. The
// copy comes back, but it is not the copy Raft recorded: it must not count
// as in sync before a full copy (its dirty map describes a copy that is
// gone), and after a failover to it no acknowledged write may be lost.
// Before, the copy got its dirty regions only and joined, and the failover
// served zeros where the first writes were.
func TestSwappedBlankCopyGetsFullCopy(t *testing.T) {
	c := newIdentityCluster(t, 1<<20, "a", "b", "c")
	rs := testConfig().RegionSize
	v := c.open("a", Config{}, nil)
	want := pattern(1, int(c.size))
	write := func(seed uint64, off, n int64) {
		t.Helper()
		p := pattern(seed, int(n))
		if _, err := v.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], p)
	}
	write(1, 0, c.size)
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	old := c.view().Gens["b"]

	// First b's node restarts with its own store: that copy is the one
	// recorded, and gets only what it missed.
	c.startNode("b", c.stores["b"], c.view().Epoch)
	write(2, 3*rs, 4096)
	if c.view().IsInSync("b") {
		t.Fatal("b not dropped")
	}
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if p, _ := v.Progress("b"); p.BytesCopied != rs {
		t.Fatalf("b's own copy came back: resync copied %d bytes, want one region (%d)", p.BytesCopied, rs)
	}
	if g := c.view().Gens["b"]; g != old || c.copies["b"].Generation() != old {
		t.Fatalf("an incremental resync changed the generation: recorded %v, copy %v, was %v", g, c.copies["b"].Generation(), old)
	}

	// Now b's node comes back with a blank disk of the same size.
	c.net.Unregister("b")
	c.net.Disconnect("a", "b")
	write(3, 5*rs, 8192) // b is dropped
	c.startNode("b", blockstore.NewMemory(c.size+IdentitySize), c.view().Epoch)
	write(4, 9*rs, 4096) // b is out of sync: marked
	if c.view().IsInSync("b") {
		t.Fatal("b in sync with a blank disk")
	}
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if p, _ := v.Progress("b"); p.BytesCopied != c.size {
		t.Fatalf("the blank copy rejoined after copying %d bytes, want all %d", p.BytesCopied, c.size)
	}
	view := c.view()
	if g := view.Gens["b"]; !view.IsInSync("b") || g.IsZero() || g == old || g != c.copies["b"].Generation() {
		t.Fatalf("after the full copy: in sync %v, recorded %v, copy %v, old %v", view.IsInSync("b"), g, c.copies["b"].Generation(), old)
	}
	c.identical("a", "b", "c")

	// The owner dies; b takes over and serves every acknowledged write.
	c.net.Unregister("a")
	c.net.Disconnect("a", "b")
	c.net.Disconnect("a", "c")
	v.Depose(errors.New("test: owner died"))
	c.coord.NewEpoch(testLUN, "b")
	nv := c.open("b", Config{CheckOnOpen: true, AckTimeout: testConfig().AckTimeout, RegionSize: rs, MaxInFlight: 16, MaxMessage: 32 << 10}, nil)
	got := make([]byte, c.size)
	if _, err := nv.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the new owner b lost acknowledged writes")
	}
}

// An in-sync copy whose disk was swapped while nobody wrote (the owner
// never noticed) is found at the next owner's Open: dropped through the
// coordinator, with every region dirty, and given a full copy.
func TestOpenDropsInSyncCopyThatIsNotRecorded(t *testing.T) {
	c := newIdentityCluster(t, 512<<10, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(5, int(c.size)), 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	v.Close()
	c.startNode("c", blockstore.NewMemory(c.size+IdentitySize), c.view().Epoch)
	c.coord.NewEpoch(testLUN, "b")
	nv := c.open("b", Config{}, nil)
	// A write waits for the drop's commit (invariant 3).
	if _, err := nv.WriteAt(pattern(7, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("c") {
		t.Fatal("the blank copy is still in sync after the new owner's Open")
	}
	if !c.view().IsInSync("a") {
		t.Fatal("the recorded copy a was dropped")
	}
	for _, p := range nv.Peers() {
		if p.Node == "c" && p.DirtyRegions != c.size/testConfig().RegionSize {
			t.Fatalf("c has %d dirty regions, want all", p.DirtyRegions)
		}
	}
	if err := nv.Resync(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	if p, _ := nv.Progress("c"); p.BytesCopied != c.size {
		t.Fatalf("resync copied %d bytes, want all %d", p.BytesCopied, c.size)
	}
	c.identical("b", "a", "c")
}

// An owner whose own copy is not the recorded one (a blank disk, or a
// restored backup of itself from an older generation) must not serve.
func TestOwnerWithWrongCopyDoesNotServe(t *testing.T) {
	c := newIdentityCluster(t, 256<<10, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(6, int(c.size)), 0); err != nil {
		t.Fatal(err)
	}
	v.Close()
	backup := blockstore.NewMemory(c.size + IdentitySize)
	buf := make([]byte, c.size+IdentitySize)
	c.stores["b"].ReadAt(buf, 0)
	backup.WriteAt(buf, 0)
	for name, raw := range map[string]*blockstore.Memory{"a blank disk": blockstore.NewMemory(c.size + IdentitySize), "a copy of another generation": backup} {
		if name != "a blank disk" {
			// b's generation moves on (a full copy), the backup keeps the old one.
			c.copies["b"].SetGeneration(NewGeneration())
			view := c.view()
			view.Gens["b"] = c.copies["b"].Generation()
			c.coord.SetView(testLUN, view)
		}
		good := c.stores["b"]
		c.startNode("b", raw, c.view().Epoch)
		c.coord.NewEpoch(testLUN, "b")
		_, err := c.tryOpen("b", Config{}, nil)
		if !errors.Is(err, ErrWrongCopy) {
			t.Fatalf("%s: Open of the owner's wrong copy: %v", name, err)
		}
		c.startNode("b", good, c.view().Epoch)
	}
}

// Bytes returns g's bytes (tests).
func (g Generation) Bytes() []byte { return g[:] }

// A LUN from before identities (none recorded, not fresh): its owner
// keeps serving and names its own copy; the other copies leave the in-sync
// set and are compared in full once, copying only what differs, before
// they count as in sync with a generation recorded. The next owner then
// finds every copy as recorded.
func TestCopiesFromBeforeIdentitiesAreComparedOnce(t *testing.T) {
	c := newIdentityCluster(t, 1<<20, "a", "b", "c")
	rs := testConfig().RegionSize
	data := pattern(8, int(c.size))
	for _, n := range c.nodes {
		c.stores[n].WriteAt(data, 0) // identical copies, no identity block
	}
	view := c.view()
	view.Fresh = false
	c.coord.SetView(testLUN, view)
	v := c.open("a", Config{}, nil)
	if g := c.view().Gens["a"]; g.IsZero() || g != c.copies["a"].Generation() {
		t.Fatalf("the owner's copy: recorded %v, holds %v", g, c.copies["a"].Generation())
	}
	if _, err := v.WriteAt(pattern(9, 4096), 5*rs); err != nil {
		t.Fatal(err)
	}
	if view := c.view(); view.IsInSync("b") || view.IsInSync("c") {
		t.Fatalf("copies without an identity still in sync: %+v", view)
	}
	for _, n := range []NodeID{"b", "c"} {
		if err := v.Resync(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		if p, _ := v.Progress(n); p.BytesCopied != rs || p.RegionsDone != c.size/rs {
			t.Fatalf("%s: compared %d regions and copied %d bytes; want all %d compared, one region (%d) copied", n, p.RegionsDone, p.BytesCopied, c.size/rs, rs)
		}
		if g := c.view().Gens[n]; g.IsZero() || g != c.copies[n].Generation() || !c.view().IsInSync(n) {
			t.Fatalf("%s after its comparison: recorded %v, holds %v, view %+v", n, g, c.copies[n].Generation(), c.view())
		}
	}
	c.identical("a", "b", "c")
	v.Close()
	c.coord.NewEpoch(testLUN, "b")
	nv := c.open("b", Config{}, nil)
	if _, err := nv.WriteAt(pattern(10, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if view := c.view(); len(view.InSync) != 3 {
		t.Fatalf("the next owner dropped a recorded copy: %+v", view)
	}
}
