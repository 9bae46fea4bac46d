package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hatgt/hatgt/blockstore"
	"github.com/hatgt/hatgt/replication"
)

// The state machine's side of copy identities (invariant 7): a new LUN's
// generations are not taken from its creation (the first owner records
// them); lun.set_generations and lun.set_in_sync record them, checked like
// every in-sync change; a node that leaves the placement loses its entry.
func TestFSMCopyGenerations(t *testing.T) {
	f := NewFSM(nil)
	l := lun(0, "n1", "n2", "n3")
	l.FreshCopies = true
	l.Generations = map[string]string{"n1": replication.NewGeneration().String()}
	applyAll(t, f, append(baseLog(t), mustCmd(t, CmdLUNCreate, LUNCreate{LUN: l})))
	got := func() *LUN { return f.State().Targets[iqnA].LUNs[0] }
	if c := got(); !c.FreshCopies || c.Generations != nil {
		t.Fatalf("created: fresh %v, generations %v; want fresh, none (the first owner records them)", c.FreshCopies, c.Generations)
	}
	id := got().ID
	g1, g2, g3 := replication.NewGeneration().String(), replication.NewGeneration().String(), replication.NewGeneration().String()
	set := func(p LUNSetGenerations) error {
		p.IQN, p.LUN = iqnA, 0
		return f.ApplyCommand(mustCmd(t, CmdLUNSetGens, p))
	}
	for name, tc := range map[string]struct {
		p    LUNSetGenerations
		want *Error
	}{
		"a stale epoch":             {LUNSetGenerations{ID: id, Epoch: 2, Generations: map[string]string{"n1": g1}}, ErrStaleEpoch},
		"another LUN's ID":          {LUNSetGenerations{ID: id + 1, Epoch: 1, Generations: map[string]string{"n1": g1}}, ErrUnknownLUN},
		"a node without a copy":     {LUNSetGenerations{ID: id, Epoch: 1, Generations: map[string]string{"n1": g1, "n4": g2}}, ErrInvalid},
		"not hex":                   {LUNSetGenerations{ID: id, Epoch: 1, Generations: map[string]string{"n1": "xyz"}}, ErrInvalid},
		"upper case":                {LUNSetGenerations{ID: id, Epoch: 1, Generations: map[string]string{"n1": "ABCDEF0123456789ABCDEF0123456789"}}, ErrInvalid},
		"zero":                      {LUNSetGenerations{ID: id, Epoch: 1, Generations: map[string]string{"n1": "00000000000000000000000000000000"}}, ErrInvalid},
		"an empty generation":       {LUNSetGenerations{ID: id, Epoch: 1, Generations: map[string]string{"n1": ""}}, ErrInvalid},
		"a short generation":        {LUNSetGenerations{ID: id, Epoch: 1, Generations: map[string]string{"n1": g1[:30]}}, ErrInvalid},
		"one bad among good ones":   {LUNSetGenerations{ID: id, Epoch: 1, Generations: map[string]string{"n1": g1, "n2": "-"}}, ErrInvalid},
		"a stale epoch, good gens":  {LUNSetGenerations{ID: id, Epoch: 0, Generations: map[string]string{"n1": g1}}, ErrStaleEpoch},
		"another LUN's ID, no gens": {LUNSetGenerations{ID: id + 1, Epoch: 1}, ErrUnknownLUN},
	} {
		if err := set(tc.p); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if c := got(); !c.FreshCopies || c.Generations != nil {
		t.Fatalf("a refused command changed the LUN: fresh %v, generations %v", c.FreshCopies, c.Generations)
	}
	if err := set(LUNSetGenerations{ID: id, Epoch: 1, Generations: map[string]string{"n1": g1, "n2": g2}}); err != nil {
		t.Fatal(err)
	}
	if c := got(); c.FreshCopies || c.Generations["n1"] != g1 || c.Generations["n2"] != g2 || len(c.Generations) != 2 {
		t.Fatalf("recorded: fresh %v, generations %v", c.FreshCopies, c.Generations)
	}

	inSync := func(node string, in bool, gen string) error {
		return f.ApplyCommand(mustCmd(t, CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 0, ID: id, Epoch: 1, Node: node, InSync: in, Generation: gen}))
	}
	// A drop keeps the copy's generation (its dirty map describes it).
	if err := inSync("n2", false, ""); err != nil {
		t.Fatal(err)
	}
	if c := got(); slices.Contains(c.InSync, "n2") || c.Generations["n2"] != g2 {
		t.Fatalf("after the drop: in sync %v, generations %v", c.InSync, c.Generations)
	}
	if err := inSync("n2", false, g3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a generation with a drop: %v", err)
	}
	if err := inSync("n2", true, "nope"); !errors.Is(err, ErrInvalid) || slices.Contains(got().InSync, "n2") {
		t.Fatalf("a join with a bad generation: %v, in sync %v", err, got().InSync)
	}
	// The join after a full copy records the copy's new generation.
	if err := inSync("n2", true, g3); err != nil {
		t.Fatal(err)
	}
	if c := got(); !slices.Equal(c.InSync, []string{"n1", "n2", "n3"}) || c.Generations["n2"] != g3 {
		t.Fatalf("after the join: in sync %v, generations %v", c.InSync, c.Generations)
	}
	// An in-sync copy's generation alone (the owner's own, say).
	if err := inSync("n3", true, g1); err != nil || got().Generations["n3"] != g1 {
		t.Fatalf("recording an in-sync copy's generation: %v, %v", err, got().Generations)
	}

	snap := snapshotBytes(t, f)
	g := NewFSM(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if again := snapshotBytes(t, g); !bytes.Equal(snap, again) || g.State().Targets[iqnA].LUNs[0].Generations["n2"] != g3 {
		t.Fatalf("generations lost in a snapshot round trip:\n%s\n%s", snap, again)
	}

	if err := f.ApplyCommand(mustCmd(t, CmdNodeRemove, NodeRemove{ID: "n2"})); err != nil {
		t.Fatal(err)
	}
	if gens := got().Generations; len(gens) != 2 || gens["n2"] != "" {
		t.Fatalf("after n2's removal: generations %v", gens)
	}
}

// Only the leader's preparation marks a new LUN's copies fresh, and only
// a replicated LUN's: a log written before identities, replayed, never
// makes an old LUN's copies fresh.
func TestPrepareMarksReplicatedCopiesFresh(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, baseLog(t))
	for _, tc := range []struct {
		l     LUN
		fresh bool
	}{{lun(0, "n1", "n2"), true}, {lun(1, "n1"), false}, {LUN{Target: iqnA, LUN: 2, Size: 1 << 20, SectorSize: 512, IOMode: "wb", Backing: "fileio", Replicas: 3}, true}} {
		l := tc.l
		if err := f.State().completeNewLUN(&l); err != nil {
			t.Fatal(err)
		}
		if err := f.ApplyCommand(mustCmd(t, CmdLUNCreate, LUNCreate{LUN: l})); err != nil {
			t.Fatal(err)
		}
		if got := f.State().Targets[iqnA].LUNs[tc.l.LUN].FreshCopies; got != tc.fresh {
			t.Errorf("LUN %d with %d replicas: fresh %v, want %v", tc.l.LUN, tc.l.Replicas, got, tc.fresh)
		}
	}
	// The same command unprepared, as an old log holds it.
	if err := f.ApplyCommand(mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(3, "n1", "n2")})); err != nil {
		t.Fatal(err)
	}
	if f.State().Targets[iqnA].LUNs[3].FreshCopies {
		t.Error("an unprepared lun.create made the copies fresh")
	}
}

// identityRig runs replication over the cluster's Coordinator on a bare
// FSM: every node's copy is a CopyStore over memory, served by its Mirror
// on an in-memory network, for one LUN created fresh with three copies.
type identityRig struct {
	t       *testing.T
	fc      *fsmCoordinator
	id      replication.LUNID
	net     *replication.InmemNetwork
	size    int64
	copies  map[string]*replication.CopyStore
	mirrors map[string]*replication.Mirror
}

func newIdentityRig(t *testing.T) *identityRig {
	fc, _ := newFSMCoordinator(t)
	l := lun(1, "n1", "n2", "n3")
	l.FreshCopies = true
	if err := fc.fsm.ApplyCommand(mustCmd(t, CmdLUNCreate, LUNCreate{LUN: l})); err != nil {
		t.Fatal(err)
	}
	r := &identityRig{t: t, fc: fc, id: replication.LUNID(fc.fsm.State().Targets[iqnA].LUNs[1].ID), net: replication.NewInmemNetwork(),
		size: int64(l.Size), copies: map[string]*replication.CopyStore{}, mirrors: map[string]*replication.Mirror{}}
	for _, n := range l.Placement {
		r.start(n, blockstore.NewMemory(r.size+replication.IdentitySize))
	}
	return r
}

// start (re)starts node n's mirror over raw; the connections of its
// previous incarnation break.
func (r *identityRig) start(n string, raw replication.Store) {
	r.t.Helper()
	cs, err := replication.NewCopyStore(raw, r.id, r.size)
	if err != nil {
		r.t.Fatal(err)
	}
	m := replication.NewMirror(nil)
	m.AddLUN(r.id, cs, r.lun().Epoch)
	r.copies[n], r.mirrors[n] = cs, m
	r.net.Register(replication.NodeID(n), m.Handle)
	for _, o := range []string{"n1", "n2", "n3"} {
		if o != n {
			r.net.Disconnect(replication.NodeID(n), replication.NodeID(o))
		}
	}
}

func (r *identityRig) lun() *LUN {
	_, l := r.fc.fsm.State().LUNByID(uint64(r.id))
	return l
}

// open opens node n's owner Volume through the cluster's Coordinator.
func (r *identityRig) open(n string) (*replication.Volume, error) {
	cfg := replication.DefaultConfig()
	cfg.RegionSize = 64 << 10
	cfg.ResyncRate = 0
	cfg.MaxMessage = 32 << 10
	cfg.LocalMirror = r.mirrors[n]
	v, err := replication.NewVolume(cfg, r.id, replication.NodeID(n), r.copies[n], r.fc.Coordinator, r.net.Transport(replication.NodeID(n)))
	if err != nil {
		r.t.Fatal(err)
	}
	if err := v.Open(context.Background()); err != nil {
		v.Close()
		return nil, err
	}
	r.t.Cleanup(func() { v.Close() })
	return v, nil
}

// newOwner commits n as the owner in the next epoch.
func (r *identityRig) newOwner(n string) {
	r.t.Helper()
	if err := r.fc.fsm.ApplyCommand(mustCmd(r.t, CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 1, Owner: n, Epoch: r.lun().Epoch})); err != nil {
		r.t.Fatal(err)
	}
}

// Copy identities through the state machine: the first owner records a
// generation for every copy before it serves; a copy whose disk was
// swapped for a blank one gets a full copy and its new generation is
// recorded in Raft with its join; the next owner then finds every copy as
// recorded and serves every acknowledged write; an owner whose own copy
// is not the recorded one does not serve.
func TestCopyIdentitiesThroughTheStateMachine(t *testing.T) {
	r := newIdentityRig(t)
	v, err := r.open("n1")
	if err != nil {
		t.Fatal(err)
	}
	l := r.lun()
	if l.FreshCopies || len(l.Generations) != 3 {
		t.Fatalf("after the first owner's Open: fresh %v, generations %v", l.FreshCopies, l.Generations)
	}
	for n, cs := range r.copies {
		if l.Generations[n] != cs.Generation().String() {
			t.Fatalf("%s's copy holds %v, Raft recorded %s", n, cs.Generation(), l.Generations[n])
		}
	}
	data := bytes.Repeat([]byte{0xa5}, int(r.size))
	if _, err := v.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}

	// n3 goes down; its disk comes back blank.
	old := l.Generations["n3"]
	r.net.Unregister("n3")
	r.net.Disconnect("n1", "n3")
	if _, err := v.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	copy(data, bytes.Repeat([]byte{0x5a}, 4096))
	if slices.Contains(r.lun().InSync, "n3") {
		t.Fatal("n3 still in sync in Raft")
	}
	r.start("n3", blockstore.NewMemory(r.size+replication.IdentitySize))
	if err := v.Resync(context.Background(), "n3"); err != nil {
		t.Fatal(err)
	}
	if p, _ := v.Progress("n3"); p.BytesCopied != r.size {
		t.Fatalf("the blank copy got %d bytes, want a full copy of %d", p.BytesCopied, r.size)
	}
	l = r.lun()
	if g := l.Generations["n3"]; !slices.Contains(l.InSync, "n3") || g == old || g != r.copies["n3"].Generation().String() {
		t.Fatalf("after the full copy: in sync %v, recorded %s (was %s), the copy holds %v", l.InSync, g, old, r.copies["n3"].Generation())
	}

	// n1 dies; n3 takes over and has every acknowledged write.
	v.Depose(errors.New("test: n1 died"))
	r.net.Unregister("n1")
	r.newOwner("n3")
	nv, err := r.open("n3")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, r.size)
	if _, err := nv.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the new owner's data differs from what was acknowledged (%v)", err)
	}
	nv.Close()

	// n2's disk is replaced too; made owner, it must not serve.
	r.start("n2", blockstore.NewMemory(r.size+replication.IdentitySize))
	r.newOwner("n2")
	if _, err := r.open("n2"); !errors.Is(err, replication.ErrWrongCopy) {
		t.Fatalf("Open of an owner whose copy is blank: %v, want ErrWrongCopy", err)
	}
}

// The cluster's views carry the generations and freshness, and a change
// of a generation alone is a new view for watchers.
func TestCoordinatorViewCarriesGenerations(t *testing.T) {
	fc, id := newFSMCoordinator(t)
	ctx := context.Background()
	v, err := fc.View(ctx, id)
	if err != nil || v.Gens == nil || len(v.Gens) != 0 || v.Fresh {
		t.Fatalf("a LUN from before identities: view %+v, %v; want an empty, non-nil Gens (checks on)", v, err)
	}
	seen := make(chan replication.View, 10)
	defer fc.Watch(id, func(v replication.View) { seen <- v })()
	g := replication.NewGeneration()
	if err := fc.MarkInSync(ctx, id, 1, "n2", g); err != nil {
		t.Fatal(err)
	}
	// The limit bounds a broken build (no delivery at all), it times
	// nothing.
	select {
	case w := <-seen:
		if w.Gens["n2"] != g {
			t.Fatalf("watched view %+v, want n2's generation %v", w, g)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a change of n2's generation alone was not delivered to the watcher")
	}
	g1 := replication.NewGeneration()
	if err := fc.RecordGenerations(ctx, id, 1, map[replication.NodeID]replication.Generation{"n1": g1}); err != nil {
		t.Fatal(err)
	}
	if v, _ := fc.View(ctx, id); v.Gens["n1"] != g1 || v.Gens["n2"] != g {
		t.Fatalf("view %+v", v)
	}
	if err := fc.RecordGenerations(ctx, id, 7, map[replication.NodeID]replication.Generation{"n1": g1}); !errors.Is(err, replication.ErrNotOwner) {
		t.Fatalf("recording in a stale epoch: %v", err)
	}
}
