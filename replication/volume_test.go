package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hatgt/hatgt/scsi"
)

// Invariant 1: an acknowledged write is on every member of the in-sync set
// recorded at the time of the acknowledgement, also while a mirror fails
// in the middle.
func TestAckedWriteIsOnEveryInSyncCopy(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	for i := range 60 {
		if i == 20 {
			c.cut("a", "c")
		}
		off := int64(i%16) * 8192
		data := pattern(uint64(i), 8192)
		if _, err := v.WriteAt(data, off); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		view := c.view()
		for _, n := range view.InSync {
			if got := c.read(n, off, 8192); !bytes.Equal(got, data) {
				t.Fatalf("write %d acknowledged but missing on in-sync %s (in-sync %v)", i, n, view.InSync)
			}
		}
		if i >= 20 && view.IsInSync("c") {
			t.Fatalf("write %d acknowledged while partitioned c is still in sync", i)
		}
	}
	if got := c.view().InSync; len(got) != 2 {
		t.Fatalf("in-sync set %v, want c dropped", got)
	}
}

// Invariant 2, mirror side: requests of an older epoch are refused and do
// not touch the store; a hello raises the epoch.
func TestMirrorRefusesStaleEpoch(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	m := c.mirrors["b"]
	m.Fence(testLUN, 5)
	data := pattern(1, 4096)
	rep := m.Handle(&Message{Type: MsgWrite, LUN: testLUN, Epoch: 4, Offset: 0, Length: 4096, Payload: data})
	if rep.Status != StatusStaleEpoch || rep.Epoch != 5 {
		t.Fatalf("epoch 4 write after fence 5: status %v epoch %d", rep.Status, rep.Epoch)
	}
	if bytes.Equal(c.read("b", 0, 4096), data) {
		t.Fatal("stale write reached the store")
	}
	if rep := m.Handle(&Message{Type: MsgFlush, LUN: testLUN, Epoch: 4}); rep.Status != StatusStaleEpoch {
		t.Fatalf("stale flush: %v", rep.Status)
	}
	if rep := m.Handle(&Message{Type: MsgWrite, LUN: testLUN, Epoch: 5, Seq: 1, Length: 4096, Payload: data}); rep.Status != StatusOK {
		t.Fatalf("current-epoch write: %v", rep.Status)
	}
	if rep := m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: 7}); rep.Status != StatusOK {
		t.Fatalf("hello 7: %v", rep.Status)
	}
	if rep := m.Handle(&Message{Type: MsgWrite, LUN: testLUN, Epoch: 5, Seq: 2, Length: 4096, Payload: data}); rep.Status != StatusStaleEpoch {
		t.Fatalf("epoch 5 after hello 7: %v", rep.Status)
	}
	if rep := m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: 6}); rep.Status != StatusStaleEpoch {
		t.Fatalf("hello 6 after 7: %v", rep.Status)
	}
	if s := m.Stats(testLUN); s.StaleRefused != 4 {
		t.Fatalf("StaleRefused = %d, want 4", s.StaleRefused)
	}
	// Malformed requests are answered, never applied.
	for _, req := range []*Message{
		{Type: MsgWrite, LUN: testLUN, Epoch: 7, Seq: 11, Offset: -4096, Length: 4096, Payload: data},
		{Type: MsgWrite, LUN: testLUN, Epoch: 7, Seq: 12, Offset: 1 << 20, Length: 4096, Payload: data},
		{Type: MsgWrite, LUN: testLUN, Epoch: 7, Seq: 13, Length: 100, Payload: data},
		{Type: MsgUnmap, LUN: testLUN, Epoch: 7, Seq: 14, Offset: 1<<20 - 4096, Length: 1 << 40},
		{Type: MsgVerify, LUN: testLUN, Epoch: 7, Length: 1 << 62},
		{Type: MsgReply, LUN: testLUN, Epoch: 7},
	} {
		if rep := m.Handle(req); rep.Status != StatusBadRequest {
			t.Errorf("%v off %d len %d: status %v, want bad-request", req.Type, req.Offset, req.Length, rep.Status)
		}
	}
	if rep := m.Handle(&Message{Type: MsgWrite, LUN: 99, Epoch: 7}); rep.Status != StatusNoLUN {
		t.Errorf("unknown LUN: %v", rep.Status)
	}
}

// Invariant 2, owner side: once a new owner has greeted the mirrors, the
// old owner (cut off from Raft, so it learns nothing from the view) gets
// its next write refused, stops acknowledging and answers not-ready.
func TestOldOwnerIsFenced(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	old := c.open("a", Config{}, silentCoord{c.coord})
	if _, err := old.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	c.coord.NewEpoch(testLUN, "b")
	nv := c.open("b", Config{}, nil)
	data := pattern(2, 4096)
	if _, err := old.WriteAt(data, 8192); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("old owner's write after the new epoch: err %v, want ErrNotOwner", err)
	}
	for _, n := range []NodeID{"b", "c"} {
		if bytes.Equal(c.read(n, 8192, 4096), data) {
			t.Fatalf("the old owner's write reached %s's copy in the new epoch", n)
		}
	}
	if k := old.ErrorKind(fmt.Errorf("wrapped: %w", ErrNotOwner)); k != scsi.BackendErrNotReady {
		t.Fatalf("ErrorKind = %v, want BackendErrNotReady", k)
	}
	if _, err := old.ReadAt(make([]byte, 4096), 0); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("old owner still reads: %v", err)
	}
	if err := old.Flush(); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("old owner still flushes: %v", err)
	}
	if _, err := nv.WriteAt(data, 8192); err != nil {
		t.Fatalf("new owner: %v", err)
	}
	c.identical("b", "c")
}

// A late write from an older connection of the same owner (sequence at or
// below the latest hello's floor, or not above the last applied) is
// refused, so it cannot overwrite what a resync copied after it.
func TestMirrorRefusesOutOfOrderWrites(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	m := c.mirrors["b"]
	newer, late := pattern(1, 4096), pattern(2, 4096)
	m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: 3, Seq: 0})
	if rep := m.Handle(&Message{Type: MsgWrite, LUN: testLUN, Epoch: 3, Seq: 5, Length: 4096, Payload: late}); rep.Status != StatusOK {
		t.Fatal(rep.Status)
	}
	// The owner reconnects; its old connection still holds seq 9.
	m.Handle(&Message{Type: MsgHello, LUN: testLUN, Epoch: 3, Seq: 10})
	if rep := m.Handle(&Message{Type: MsgWrite, LUN: testLUN, Epoch: 3, Seq: 11, Length: 4096, Payload: newer}); rep.Status != StatusOK {
		t.Fatal(rep.Status)
	}
	for _, seq := range []uint64{9, 11} {
		if rep := m.Handle(&Message{Type: MsgWrite, LUN: testLUN, Epoch: 3, Seq: seq, Length: 4096, Payload: late}); rep.Status != StatusOutOfOrder {
			t.Fatalf("seq %d after 11: %v", seq, rep.Status)
		}
	}
	if rep := m.Handle(&Message{Type: MsgUnmap, LUN: testLUN, Epoch: 3, Seq: 10, Length: 4096}); rep.Status != StatusOutOfOrder {
		t.Fatalf("late unmap: %v", rep.Status)
	}
	if !bytes.Equal(c.read("b", 0, 4096), newer) {
		t.Fatal("a late request overwrote newer data")
	}
	// A new epoch starts its numbering afresh.
	if rep := m.Handle(&Message{Type: MsgWrite, LUN: testLUN, Epoch: 4, Seq: 1, Length: 4096, Payload: late}); rep.Status != StatusOK {
		t.Fatalf("first write of epoch 4: %v", rep.Status)
	}
}

// Mirror.Follow fences at every committed epoch, before any hello.
func TestMirrorFollowsEpochs(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	m := c.mirrors["b"]
	cancel := m.Follow(context.Background(), c.coord, testLUN)
	defer cancel()
	if m.Newest(testLUN) != 1 {
		t.Fatalf("newest %d after Follow, want 1", m.Newest(testLUN))
	}
	c.coord.NewEpoch(testLUN, "a")
	waitUntil(t, func() bool { return m.Newest(testLUN) == 2 })
	if rep := m.Handle(&Message{Type: MsgFlush, LUN: testLUN, Epoch: 1}); rep.Status != StatusStaleEpoch {
		t.Fatalf("epoch 1 flush after epoch 2 committed: %v", rep.Status)
	}
}

// A view committed with a newer epoch deposes the owner through Watch.
func TestViewChangeDeposes(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	done := make(chan struct{})
	cancel := c.coord.Watch(testLUN, func(View) { close(done) })
	c.coord.NewEpoch(testLUN, "b")
	<-done
	cancel()
	// The volume's own watcher may run just after ours: poll the outcome,
	// not the time.
	for range 1000 {
		if err := v.serving(); err != nil {
			if !errors.Is(err, ErrNotOwner) {
				t.Fatalf("serving: %v", err)
			}
			return
		}
		waitABit()
	}
	t.Fatal("owner still serving after a newer epoch was committed")
}

// Invariant 3: a mirror partitioned mid-stream; every write it missed is
// acknowledged only after its drop was committed (order of events in the
// coordinator's log, not wall clock).
func TestMissedWritesAckedAfterDropCommit(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	clk := NewManualClock(testStart)
	cfg := testConfig()
	cfg.Clock = clk
	v := c.open("a", cfg, nil)
	for i := range 8 {
		if _, err := v.WriteAt(pattern(uint64(i), 4096), int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	c.coord.HoldCommits()
	c.net.Partition("a", "c") // c stops answering: only its timeout tells
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(64<<10) + int64(i)*8192
			if _, err := v.WriteAt(pattern(uint64(100+i), 8192), off); err != nil {
				errs <- err
				return
			}
			c.coord.Record(fmt.Sprintf("ack %d", i))
		}()
	}
	// Once b took all 16 writes and its acks stopped their timers, the
	// pending timers are c's: let them expire.
	waitUntil(t, func() bool { return c.mirrors["b"].Stats(testLUN).Writes == 24 && clk.Pending() == 16 })
	clk.Advance(cfg.AckTimeout)
	// Nothing may be acknowledged while the drop cannot commit.
	waitUntil(t, func() bool { return hasPeerState(v, "c", "dropping") })
	if evs := c.coord.Events(); indexOf(evs, "ack") >= 0 {
		t.Fatalf("a write was acknowledged before the drop committed: %v", evs)
	}
	c.coord.ReleaseCommits()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	evs := c.coord.Events()
	drop := indexOf(evs, "drop lun=1 epoch=1 node=c")
	if drop < 0 {
		t.Fatalf("no drop of c committed: %v", evs)
	}
	acks := 0
	for i, e := range evs {
		if strings.HasPrefix(e, "ack") {
			acks++
			if i < drop {
				t.Fatalf("%q at %d before the drop at %d: %v", e, i, drop, evs)
			}
		}
	}
	if acks != 16 {
		t.Fatalf("%d acks, want 16", acks)
	}
	if c.view().IsInSync("c") {
		t.Fatal("c still in sync")
	}
	c.identical("a", "b")
}

// If the drop cannot be committed (no quorum), the writes the mirror
// missed are never acknowledged: the owner stops serving instead.
func TestDropFailureDeposesOwner(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	c.coord.FailNext(ErrNoQuorum)
	c.cut("a", "c")
	_, err := v.WriteAt(pattern(1, 4096), 0)
	if !errors.Is(err, ErrNotOwner) {
		t.Fatalf("write with an uncommittable drop: err %v, want ErrNotOwner", err)
	}
	if v.ErrorKind(err) != scsi.BackendErrNotReady {
		t.Fatalf("ErrorKind(%v) is not not-ready", err)
	}
	if _, err := v.WriteAt(pattern(2, 4096), 4096); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("later write: %v", err)
	}
	if !c.view().IsInSync("c") {
		t.Fatal("c left the in-sync set without a commit")
	}
}

// A mirror whose store fails is dropped like one that does not answer.
func TestMirrorIOErrorDropsIt(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	c.stores["c"].SetReadOnly(true)
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("c") {
		t.Fatal("c failed a write but stayed in sync")
	}
	if !hasPeerState(v, "c", "out-of-sync") {
		t.Fatalf("peers %+v", v.Peers())
	}
}

// Write-back: a mirror that fails may lose what it cached since its last
// flush, so those regions join its dirty map; regions flushed before do
// not.
func TestUnflushedRegionsBecomeDirty(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	rs := testConfig().RegionSize
	v.WriteAt(pattern(1, 4096), 0) // region 0, flushed below
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	v.WriteAt(pattern(2, 4096), 3*rs) // region 3, cached only
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(3, 4096), 5*rs); err != nil { // region 5, missed
		t.Fatal(err)
	}
	v.mu.Lock()
	d := v.peers["b"].dirty
	v.mu.Unlock()
	if d.IsDirty(0) || !d.IsDirty(3) || !d.IsDirty(5) || d.Count() != 2 {
		t.Fatalf("dirty regions 0:%v 3:%v 5:%v count %d; want 3 and 5 only", d.IsDirty(0), d.IsDirty(3), d.IsDirty(5), d.Count())
	}
}

// Write-through: every write is FUA on the mirrors.
func TestWriteThroughSendsFUA(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	cfg := testConfig()
	cfg.WriteThrough = true
	var fua, plain int
	var mu sync.Mutex
	m := c.mirrors["b"]
	c.net.Register("b", func(req *Message) *Message {
		if req.Type == MsgWrite {
			mu.Lock()
			if req.Flags&FlagFUA != 0 {
				fua++
			} else {
				plain++
			}
			mu.Unlock()
		}
		return m.Handle(req)
	})
	v := c.open("a", cfg, nil)
	for i := range 5 {
		if _, err := v.WriteAt(pattern(uint64(i), 4096), 0); err != nil {
			t.Fatal(err)
		}
	}
	if fua != 5 || plain != 0 {
		t.Fatalf("fua %d plain %d, want 5 and 0", fua, plain)
	}
}

// Unmap and large (split) writes replicate too.
func TestUnmapAndLargeWrite(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	big := pattern(9, 300<<10) // ten messages of MaxMessage
	if _, err := v.WriteAt(big, 4096); err != nil {
		t.Fatal(err)
	}
	if err := v.Unmap(64<<10, 128<<10); err != nil {
		t.Fatal(err)
	}
	c.identical("a", "b")
	if got := c.read("b", 64<<10, 128<<10); !bytes.Equal(got, make([]byte, 128<<10)) {
		t.Fatal("unmapped range does not read zeros on the mirror")
	}
	// GET LBA STATUS through the owner's Volume sees the deallocation.
	if mapped, n, err := v.MappedExtent(64 << 10); mapped || n < 128<<10 || err != nil {
		t.Fatalf("the unmapped range: mapped %v for %d bytes (%v)", mapped, n, err)
	}
	if mapped, _, err := v.MappedExtent(4096); !mapped || err != nil {
		t.Fatalf("a written block: mapped %v (%v)", mapped, err)
	}
	if _, err := v.WriteAt(big, 1<<20-4096); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write past the end: %v", err)
	}
	if _, err := v.WriteAt(big, -1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("negative offset: %v", err)
	}
}

// Many writers on overlapping ranges: after quiescing, every copy is byte
// identical (overlapping writes reach all copies in one order).
func TestConcurrentOverlappingWrites(t *testing.T) {
	c := newTestCluster(t, 256<<10, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				seed := uint64(w*1000 + i)
				n := 4096 * int(1+seed%9)
				off := int64(seed*7919%60) * 4096
				if off+int64(n) > c.size {
					off = c.size - int64(n)
				}
				var err error
				switch seed % 7 {
				case 0:
					err = v.Unmap(off, int64(n))
				case 1:
					_, err = v.WriteAtFUA(pattern(seed, n), off)
				default:
					_, err = v.WriteAt(pattern(seed, n), off)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.identical("a", "b", "c")
}

func hasPeerState(v *Volume, n NodeID, state string) bool {
	for _, p := range v.Peers() {
		if p.Node == n {
			return p.State == state
		}
	}
	return false
}

// waitUntil polls cond (a state, not a time bound); it gives up after many
// rounds so a broken build fails rather than hangs.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for range 5000 {
		if cond() {
			return
		}
		waitABit()
	}
	t.Fatal("condition never held")
}

var _ = context.Background

// Reopening an owner in the epoch another Volume already served is refused
// (its sequence numbers would restart below what the mirrors applied);
// with a new epoch it works.
func TestOpenRefusesReusedEpoch(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	v.Close()
	v2, err := NewVolume(testConfig(), testLUN, "a", c.stores["a"], c.coord, c.net.Transport("a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := v2.Open(context.Background()); !errors.Is(err, ErrEpochReused) {
		t.Fatalf("reopen in the same epoch: %v", err)
	}
	c.coord.NewEpoch(testLUN, "a")
	v3 := c.open("a", Config{}, nil)
	if _, err := v3.WriteAt(pattern(2, 4096), 0); err != nil {
		t.Fatal(err)
	}
	c.identical("a", "b")
}

// The owner's own copy fails a write the mirrors took: the mirrors get the
// owner's content back, so the copies still agree, and the initiator gets
// the local error.
func TestLocalWriteFailureKeepsCopiesEqual(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(1, 8192), 4096); err != nil {
		t.Fatal(err)
	}
	c.stores["a"].SetReadOnly(true)
	_, err := v.WriteAt(pattern(2, 8192), 4096)
	if err == nil || v.ErrorKind(err) != scsi.BackendErrReadOnly {
		t.Fatalf("write to a read-only owner copy: %v", err)
	}
	c.identical("a", "b", "c")
	if got := c.view().InSync; len(got) != 3 {
		t.Fatalf("in sync %v", got)
	}
}
