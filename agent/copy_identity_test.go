package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/hatgt/hatgt/blockstore"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// replFixture is a reconciler with the replication side, over a state the
// test edits and a MemCoordinator that plays Raft for the LUN (kept equal
// to the state's in-sync set and epoch by the test).
type replFixture struct {
	*recFixture
	coord *replication.MemCoordinator
	mu    sync.Mutex
	// proposed lists "owner@epoch" of every lun.set_owner proposed.
	proposed []string
}

const identityLUNID = 5

func newReplFixture(t *testing.T, node string) *replFixture {
	f := &replFixture{recFixture: newRecFixture(t, node), coord: replication.NewMemCoordinator()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	log := slog.New(slog.DiscardHandler)
	h := newReplicaHost(log, node, f.dir, ln, func(replication.NodeID) (string, error) { return "", os.ErrNotExist }, nil)
	h.coord = f.coord
	h.state = func() *cluster.State { return f.st.Clone() }
	h.lease = func() (uint64, bool) { return 1, true }
	h.leaseValid = func(uint64) bool { return true }
	h.propose = func(_ context.Context, _ string, _ uint64, owner string, epoch uint64) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.proposed = append(f.proposed, fmt.Sprintf("%s@%d", owner, epoch))
		if owner == node {
			// A claim: applied at once.
			l := f.st.Targets[testIQN].LUNs[0]
			l.Epoch++
			f.coord.NewEpoch(identityLUNID, replication.NodeID(owner))
		}
		return nil
	}
	f.rec.repl = h
	return f
}

// addReplicated adds LUN 0 (ID identityLUNID, 1 MiB) owned by owner on
// n1 and n2, both in sync, with generations recorded for them, and the
// same view in the coordinator.
func (f *replFixture) addReplicated(owner string, epoch uint64, gens map[string]replication.Generation) {
	addLUN(f.st, 0, 1<<20, owner, "n1", "n2")
	l := f.st.Targets[testIQN].LUNs[0]
	l.ID, l.Epoch = identityLUNID, epoch
	view := replication.View{Epoch: epoch, Owner: replication.NodeID(owner), Replicas: []replication.NodeID{"n1", "n2"},
		InSync: []replication.NodeID{"n1", "n2"}, Gens: map[replication.NodeID]replication.Generation{}}
	for n, g := range gens {
		if l.Generations == nil {
			l.Generations = map[string]string{}
		}
		l.Generations[n] = g.String()
		view.Gens[replication.NodeID(n)] = g
	}
	f.coord.SetView(identityLUNID, view)
}

// backing is the path of this node's copy of LUN 0.
func (f *replFixture) backing() string {
	return cluster.DefaultBackingPath(f.dir, testIQN, 0, identityLUNID)
}

// writeCopy writes this node's copy file of LUN 0: 1 MiB of data and an
// identity block holding gen (none when zero).
func (f *replFixture) writeCopy(gen replication.Generation) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Dir(f.backing()), 0o750); err != nil {
		f.t.Fatal(err)
	}
	s, err := blockstore.OpenFile(f.backing(), blockstore.Options{Size: 1<<20 + replication.IdentitySize, Create: true})
	if err != nil {
		f.t.Fatal(err)
	}
	defer s.Close()
	cs, err := replication.NewCopyStore(s, identityLUNID, 1<<20)
	if err != nil {
		f.t.Fatal(err)
	}
	if !gen.IsZero() {
		if err := cs.SetGeneration(gen); err != nil {
			f.t.Fatal(err)
		}
	}
}

// The node side of invariant 7. A mirror's copy that has no generation
// where Raft recorded one (its disk was replaced by a blank one of the same
// size while the node was down) is lost: it refuses writes until a full
// copy, and its node takes it out of the in-sync set through Raft at once,
// so no failover picks it. The copy Raft recorded is not touched.
func TestReconcileDropsMirrorCopyNotRecorded(t *testing.T) {
	g1, g2 := replication.NewGeneration(), replication.NewGeneration()
	for _, tc := range []struct {
		name string
		copy replication.Generation // the copy file's generation
		gens map[string]replication.Generation
		lost bool
	}{
		{"the recorded copy", g2, map[string]replication.Generation{"n1": g1, "n2": g2}, false},
		{"a blank disk", replication.Generation{}, map[string]replication.Generation{"n1": g1, "n2": g2}, true},
		{"a LUN from before identities", replication.Generation{}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newReplFixture(t, "n2")
			f.addReplicated("n1", 3, tc.gens)
			f.writeCopy(tc.copy)
			if err := f.reconcile(); err != nil {
				t.Fatal(err)
			}
			if got := f.rec.repl.mirror.Lost(identityLUNID); got != tc.lost {
				t.Fatalf("lost = %v, want %v", got, tc.lost)
			}
			v, _ := f.coord.View(context.Background(), identityLUNID)
			if v.IsInSync("n2") == tc.lost {
				t.Fatalf("in the in-sync set: %v, lost %v (view %+v)", v.IsInSync("n2"), tc.lost, v)
			}
			rep := f.rec.repl.mirror.Handle(&replication.Message{Type: replication.MsgHello, LUN: identityLUNID, Epoch: 3})
			if want := map[bool]replication.Status{true: replication.StatusCopyLost, false: replication.StatusOK}[tc.lost]; rep.Status != want {
				t.Fatalf("owner's hello: %v, want %v", rep.Status, want)
			}
			if !tc.lost && string(rep.Payload) != string(tc.copy[:]) {
				t.Fatalf("hello reply reports generation %x, the copy holds %v", rep.Payload, tc.copy)
			}
		})
	}
}

// An owner whose copy is not the one Raft recorded does not serve: its
// volume refuses to open, and the node hands the LUN to the other in-sync
// copy (then drops its own, which is lost, from the in-sync set).
func TestReconcileOwnerWithCopyNotRecordedHandsOver(t *testing.T) {
	g1, g2 := replication.NewGeneration(), replication.NewGeneration()
	f := newReplFixture(t, "n2")
	f.addReplicated("n2", 3, map[string]replication.Generation{"n1": g1, "n2": g2})
	f.writeCopy(replication.NewGeneration()) // a copy of another generation: a restored backup
	f.reconcile()                            // claims epoch 4
	f.reconcile()                            // opens: refused, hands over
	f.mu.Lock()
	proposed := slices.Clone(f.proposed)
	f.mu.Unlock()
	if !slices.Equal(proposed, []string{"n2@3", "n1@4"}) {
		t.Fatalf("proposed owners %v, want a claim at 3, then n1 at 4", proposed)
	}
	if v := f.rec.repl.volume(identityLUNID); v != nil && v.Serving() == nil {
		t.Fatal("the owner serves a copy that is not the recorded one")
	}
	if !f.rec.repl.mirror.Lost(identityLUNID) {
		t.Fatal("the refused copy is not marked lost")
	}
	// n1 owns it now: n2's copy leaves the in-sync set.
	l := f.st.Targets[testIQN].LUNs[0]
	l.Owner, l.Epoch = "n1", 5
	f.coord.NewEpoch(identityLUNID, "n1")
	f.reconcile()
	if v, _ := f.coord.View(context.Background(), identityLUNID); v.IsInSync("n2") {
		t.Fatalf("the lost copy is still in sync: %+v", v)
	}
}

// A replicated LUN's file from before copy identities (exactly the LUN's
// size) is grown by the identity block, its data kept, and holds no
// generation; a new one is created at the LUN's size plus the block; a
// LUN with one copy keeps its file at the LUN's size.
func TestEnsureBackingAddsTheIdentityBlock(t *testing.T) {
	dir := t.TempDir()
	l := cluster.DesiredLUN{LUN: cluster.LUN{Size: 1 << 20, SectorSize: 512, IOMode: cluster.IOModeWriteBack,
		Backing: cluster.BackingFile, Replicas: 2, ID: 9}, BackingPath: filepath.Join(dir, "old.img")}
	old := bytes.Repeat([]byte{0x3c}, 1<<20)
	if err := os.WriteFile(l.BackingPath, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if created, err := EnsureBacking(l); err != nil || created {
		t.Fatalf("growing a file from before identities: created %v, %v", created, err)
	}
	s, err := OpenStore(l, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != BackingSize(l) || BackingSize(l) != 1<<20+replication.IdentitySize {
		t.Fatalf("store of %d bytes, BackingSize %d", s.Size(), BackingSize(l))
	}
	cs, err := replication.NewCopyStore(s, 9, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if _, err := cs.ReadAt(got, 0); err != nil || !bytes.Equal(got, old) || !cs.Generation().IsZero() {
		t.Fatalf("after growing: data kept %v (%v), generation %v", bytes.Equal(got, old), err, cs.Generation())
	}

	l.BackingPath = filepath.Join(dir, "new.img")
	if created, err := EnsureBacking(l); err != nil || !created {
		t.Fatalf("a new file: created %v, %v", created, err)
	}
	if st, err := os.Stat(l.BackingPath); err != nil || st.Size() != 1<<20+replication.IdentitySize {
		t.Fatalf("new replicated file: %v, %v", st, err)
	}
	one := l
	one.Replicas, one.BackingPath = 1, filepath.Join(dir, "one.img")
	if _, err := EnsureBacking(one); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(one.BackingPath); err != nil || st.Size() != 1<<20 {
		t.Fatalf("a LUN with one copy: %v, %v", st, err)
	}
	// Another size is still refused, never resized.
	if err := os.WriteFile(filepath.Join(dir, "odd.img"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	l.BackingPath = filepath.Join(dir, "odd.img")
	if _, err := EnsureBacking(l); err == nil {
		t.Fatal("a file of another size was taken")
	}
}
