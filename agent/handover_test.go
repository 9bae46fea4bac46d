package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hatgt/hatgt/blockstore"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// soloCoord is the Coordinator of a LUN with a single copy, owned by n1.
type soloCoord struct{ epoch uint64 }

func (c soloCoord) View(context.Context, replication.LUNID) (replication.View, error) {
	return replication.View{Epoch: c.epoch, Owner: "n1", Replicas: []replication.NodeID{"n1"}, InSync: []replication.NodeID{"n1"}}, nil
}
func (soloCoord) DropFromInSync(context.Context, replication.LUNID, uint64, replication.NodeID) error {
	return nil
}
func (soloCoord) MarkInSync(context.Context, replication.LUNID, uint64, replication.NodeID, replication.Generation) error {
	return nil
}
func (soloCoord) Watch(replication.LUNID, func(replication.View)) func() { return func() {} }
func (soloCoord) RecordGenerations(context.Context, replication.LUNID, uint64, map[replication.NodeID]replication.Generation) error {
	return nil
}

// gatedStore holds every write until release is closed, and says when
// one arrived.
type gatedStore struct {
	*blockstore.Memory
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *gatedStore) WriteAt(p []byte, off int64) (int, error) {
	s.once.Do(func() { close(s.arrived) })
	<-s.release
	return s.Memory.WriteAt(p, off)
}

func (s *gatedStore) Close() error { return nil }

// ownedSolo returns a replica host serving LUN ID 7 (epoch 2) as its owner
// over store s, the LU's backend, and the proposals of new epochs it made.
func ownedSolo(t *testing.T, s Store) (*replicaHost, *replicaCopy, *switchBackend, cluster.DesiredLUN, *[]uint64) {
	t.Helper()
	h := newReplicaHost(slog.New(slog.DiscardHandler), "n1", t.TempDir(), nil,
		func(replication.NodeID) (string, error) { return "", errors.New("no peers in this test") }, nil)
	h.coord = soloCoord{epoch: 2}
	h.lease = func() (uint64, bool) { return 1, true }
	h.leaseValid = func(uint64) bool { return true }
	var mu sync.Mutex
	var claims []uint64
	h.propose = func(_ context.Context, _ string, _ uint64, _ string, epoch uint64) error {
		mu.Lock()
		defer mu.Unlock()
		claims = append(claims, epoch)
		return nil
	}
	l := cluster.DesiredLUN{Owned: true, LUN: cluster.LUN{Target: testIQN, LUN: 0, ID: 7, Size: uint64(s.Size() - replication.IdentitySize),
		SectorSize: 512, IOMode: cluster.IOModeWriteBack, Replicas: 2, Placement: []string{"n1", "n2"},
		InSync: []string{"n1"}, Owner: "n1", Epoch: 2}}
	c, err := h.attach(l, func() (Store, error) { return s, nil })
	if err != nil {
		t.Fatal(err)
	}
	c.claimed = 2
	if err := h.open(context.Background(), c, l); err != nil {
		t.Fatalf("open the owner volume: %v", err)
	}
	t.Cleanup(func() { h.closeVolume(c) })
	return h, c, &switchBackend{size: s.Size(), h: h, c: c}, l, &claims
}

// A leave's StopServing returns only once the command in flight on the
// LUN finished; every command after it fails as "not the owner", and the
// reconciler neither opens the LUN again nor claims an epoch for it until
// ResumeServing.
func TestStopServingWaitsForCommandsInFlight(t *testing.T) {
	s := &gatedStore{Memory: blockstore.NewMemory(1 << 20), arrived: make(chan struct{}), release: make(chan struct{})}
	h, c, sw, l, claims := ownedSolo(t, s)

	wrote := make(chan error, 1)
	go func() {
		_, err := sw.WriteAt(make([]byte, 4096), 0)
		wrote <- err
	}()
	<-s.arrived // the write is in the store now

	stopped := make(chan error, 1)
	go func() { stopped <- h.StopServing(context.Background(), []uint64{l.ID}) }()
	select {
	case err := <-stopped:
		t.Fatalf("StopServing returned (%v) while a write was still in flight: the next owner could serve beside it", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(s.release)
	werr := <-wrote
	if err := <-stopped; err != nil {
		t.Fatalf("StopServing: %v", err)
	}
	t.Logf("the write in flight when the leave began answered %v (either is fine: it ran before StopServing returned)", werr)

	if _, err := sw.WriteAt(make([]byte, 4096), 0); !errors.Is(err, replication.ErrNotOwner) {
		t.Errorf("write after StopServing: %v, want ErrNotOwner", err)
	}
	if _, err := sw.ReadAt(make([]byte, 4096), 0); !errors.Is(err, replication.ErrNotOwner) {
		t.Errorf("read after StopServing: %v, want ErrNotOwner", err)
	}

	// The reconciler would reopen a deposed volume in a new epoch: not
	// while the leave hands the LUN over.
	h.closeVolume(c)
	c.claimed = 0
	if err := h.open(context.Background(), c, l); !errors.Is(err, errStopped) {
		t.Errorf("open during the handover: %v, want errStopped", err)
	}
	if len(*claims) != 0 {
		t.Errorf("claimed epochs %v during the handover: a claim races the handover's owner change", *claims)
	}
	if h.ownedNotServing(stateOwnedBy("n1", l)) {
		t.Error("the control loop would kick the reconciler to reopen a LUN under handover")
	}

	h.ResumeServing([]uint64{l.ID})
	if err := h.open(context.Background(), c, l); !errors.Is(err, errClaimed) {
		t.Errorf("open after ResumeServing: %v, want a claim of a new epoch", err)
	}
	if len(*claims) != 1 {
		t.Errorf("claims after ResumeServing: %v, want one", *claims)
	}
}

// A volume whose open finishes after StopServing marked its LUN is never
// served: open checks the mark where it publishes the volume.
func TestStopServingBeforeOpenFinishes(t *testing.T) {
	s := &gatedStore{Memory: blockstore.NewMemory(1 << 20), arrived: make(chan struct{}), release: make(chan struct{})}
	close(s.release)
	h, c, sw, l, _ := ownedSolo(t, s)
	h.closeVolume(c)
	if err := h.StopServing(context.Background(), []uint64{l.ID}); err != nil {
		t.Fatal(err)
	}
	if err := h.open(context.Background(), c, l); !errors.Is(err, errStopped) {
		t.Fatalf("open after StopServing: %v, want errStopped", err)
	}
	if _, err := sw.WriteAt(make([]byte, 512), 0); !errors.Is(err, replication.ErrNotOwner) {
		t.Errorf("write: %v, want ErrNotOwner", err)
	}
}

// stateOwnedBy is a state where owner owns l.
func stateOwnedBy(owner string, l cluster.DesiredLUN) *cluster.State {
	s := threeNodes()
	ll := l.LUN
	ll.Owner = owner
	s.Targets[testIQN].LUNs[ll.LUN] = &ll
	return s
}

// A claim whose apply answered an error but committed (a leader lost
// after the append, an apply timeout) is this node's epoch: the next
// reconcile, which that very commit triggers, opens the volume in it
// instead of claiming one more epoch. Claiming again looped for as long as
// applies answered errors: each claim's commit triggered the next.
func TestAmbiguousClaimIsTakenNotRepeated(t *testing.T) {
	s := &gatedStore{Memory: blockstore.NewMemory(1 << 20), arrived: make(chan struct{}), release: make(chan struct{})}
	close(s.release) // nothing held
	h, c, _, l, claims := ownedSolo(t, s)
	h.closeVolume(c)
	c.claimed = 0 // a deposed volume: the reconciler claims a new epoch
	h.propose = func(_ context.Context, _ string, _ uint64, _ string, epoch uint64) error {
		*claims = append(*claims, epoch)
		return errors.New("leadership lost while committing the command (it committed all the same)")
	}
	if err := h.open(context.Background(), c, l); err == nil || errors.Is(err, errClaimed) {
		t.Fatalf("open with a claim that answered an error: %v, want that error", err)
	}
	// The state shows the claim committed: epoch 3, owner n1.
	l.Epoch = 3
	h.coord = soloCoord{epoch: 3}
	if err := h.open(context.Background(), c, l); err != nil {
		t.Fatalf("open in the epoch the ambiguous claim committed: %v", err)
	}
	if len(*claims) != 1 {
		t.Errorf("claims %v: want one (epoch 2 -> 3), not a new claim at every reconcile", *claims)
	}
	if v := c.volume(); v == nil || v.Epoch() != 3 {
		t.Fatalf("volume %v: want one open in epoch 3", v)
	}
	// A claim that answered an error and did not commit is made again.
	h.closeVolume(c)
	c.claimed = 0
	if err := h.open(context.Background(), c, l); err == nil {
		t.Fatal("open with a failing claim succeeded")
	}
	l.Epoch, l.Owner = 4, "n2" // another node's epoch: nothing to take
	if err := h.open(context.Background(), c, l); err == nil {
		t.Fatal("opened a volume in another node's epoch")
	}
	if len(*claims) != 3 {
		t.Errorf("claims %v: want 3", *claims)
	}
}
