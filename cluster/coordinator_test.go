package cluster

import (
	"context"
	"errors"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatgt/hatgt/replication"
)

// fsmCoordinator is a Coordinator over a bare FSM: commands apply at once,
// and every proposal is counted.
type fsmCoordinator struct {
	*Coordinator
	fsm      *FSM
	mu       sync.Mutex
	proposed []Command
	failNext error
	clock    time.Time
}

func newFSMCoordinator(t *testing.T) (*fsmCoordinator, replication.LUNID) {
	f := NewFSM(nil)
	applyAll(t, f, append(baseLog(t), mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2", "n3")})))
	fc := &fsmCoordinator{fsm: f, clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	fc.Coordinator = newCoordinator(f, func(ctx context.Context, cmd Command) error {
		fc.mu.Lock()
		fail := fc.failNext
		fc.failNext = nil
		fc.proposed = append(fc.proposed, cmd)
		fc.mu.Unlock()
		if fail != nil {
			return fail
		}
		return f.ApplyCommand(cmd)
	})
	fc.now = func() time.Time {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		return fc.clock
	}
	return fc, replication.LUNID(f.State().Targets[iqnA].LUNs[0].ID)
}

func (fc *fsmCoordinator) advance(d time.Duration) {
	fc.mu.Lock()
	fc.clock = fc.clock.Add(d)
	fc.mu.Unlock()
}

func (fc *fsmCoordinator) proposals(typ string) int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	n := 0
	for _, c := range fc.proposed {
		if c.Type == typ {
			n++
		}
	}
	return n
}

// TestCoordinatorProgressCadence: an owner reporting once a second by its
// own clock has every report proposed, although this node reads each a
// little early or late (here 30 ms early each time): with the throttle at
// exactly the interval, every other report was left out.
func TestCoordinatorProgressCadence(t *testing.T) {
	fc, id := newFSMCoordinator(t)
	ctx := context.Background()
	run := fc.clock
	for i := int64(0); i < 5; i++ {
		if i > 0 {
			fc.advance(ProgressInterval - 30*time.Millisecond)
		}
		err := fc.ReportProgress(ctx, id, 1, "n2", replication.Progress{Node: "n2", RegionsTotal: 10, RegionsDone: i, BytesDone: i << 20, Started: run})
		if err != nil {
			t.Fatal(err)
		}
		if got := fc.proposals(CmdLUNSetProgress); got != int(i)+1 {
			t.Fatalf("report %d: %d proposals, want %d (a steady once-a-second report left out)", i, got, i+1)
		}
	}
}

func TestCoordinatorProgressThrottle(t *testing.T) {
	fc, id := newFSMCoordinator(t)
	ctx := context.Background()
	run1 := fc.clock
	report := func(epoch uint64, started time.Time, done int64, fin bool) error {
		return fc.ReportProgress(ctx, id, epoch, "n2", replication.Progress{Node: "n2", RegionsTotal: 8, RegionsDone: done,
			BytesCopied: done << 20, Started: started, Rate: 1e6, ETA: 3 * time.Second, Done: fin})
	}
	recorded := func() ResyncProgress {
		t.Helper()
		p := fc.fsm.State().Targets[iqnA].LUNs[0].Resync["n2"]
		if p == nil {
			t.Fatal("no progress recorded")
		}
		return *p
	}
	steps := []struct {
		name     string
		do       func() error
		proposed int   // set_progress proposals so far
		done     int64 // RegionsDone recorded
	}{
		{"first report of a run", func() error { return report(1, run1, 1, false) }, 1, 1},
		{"a quick second report is left out", func() error { fc.advance(300 * time.Millisecond); return report(1, run1, 2, false) }, 1, 1},
		{"a third, still within the interval", func() error { fc.advance(600 * time.Millisecond); return report(1, run1, 3, false) }, 1, 1},
		{"once the interval passed", func() error { fc.advance(100 * time.Millisecond); return report(1, run1, 4, false) }, 2, 4},
		{"a complete report always goes", func() error { return report(1, run1, 8, false) }, 3, 8},
		{"a Done report always goes", func() error { return report(1, run1, 8, true) }, 4, 8},
		{"a new run right after", func() error { return report(1, run1.Add(time.Hour), 1, false) }, 5, 1},
		{"its quick second report", func() error { return report(1, run1.Add(time.Hour), 2, false) }, 5, 1},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := fc.proposals(CmdLUNSetProgress); got != s.proposed {
			t.Fatalf("%s: %d proposals, want %d", s.name, got, s.proposed)
		}
		if got := recorded().RegionsDone; got != s.done {
			t.Fatalf("%s: recorded %d regions done, want %d", s.name, got, s.done)
		}
	}
	if p := recorded(); p.RateBps != 1e6 || p.ETAMillis != 3000 || p.Epoch != 1 || p.BytesCopied != 1<<20 {
		t.Errorf("recorded %+v", p)
	}

	// A proposal that fails (no quorum) does not use up the slot: the next
	// report is proposed again.
	fc.advance(2 * time.Second)
	fc.failNext = errf(ErrNoLeader, "no cluster leader")
	if err := report(1, run1.Add(time.Hour), 3, false); !errors.Is(err, ErrNoLeader) || errors.Is(err, replication.ErrNotOwner) {
		t.Fatalf("without quorum: %v", err)
	}
	if err := report(1, run1.Add(time.Hour), 3, false); err != nil || recorded().RegionsDone != 3 {
		t.Fatalf("after a failed proposal: %v, %+v", err, recorded())
	}

	// A new epoch: reports of the old one are refused, proposed or not.
	if err := fc.fsm.ApplyCommand(mustCmd(t, CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 0, Owner: "n3", Epoch: 1})); err != nil {
		t.Fatal(err)
	}
	if err := report(1, run1.Add(time.Hour), 4, false); !errors.Is(err, replication.ErrNotOwner) {
		t.Fatalf("throttled report of an old epoch: %v", err)
	}
	if err := report(1, run1.Add(time.Hour), 8, true); !errors.Is(err, replication.ErrNotOwner) || !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("proposed report of an old epoch: %v", err)
	}
	if err := fc.ReportProgress(ctx, id+1, 2, "n2", replication.Progress{}); !errors.Is(err, replication.ErrNotOwner) {
		t.Fatalf("report for an unknown LUN: %v", err)
	}
	// Numbers the state machine would refuse are made sane, not lost.
	if err := fc.ReportProgress(ctx, id, 2, "n2", replication.Progress{RegionsTotal: 2, RegionsDone: 5, BytesCopied: -1, Rate: -3, Done: true}); err != nil {
		t.Fatal(err)
	}
	if p := recorded(); p.RegionsTotal != 5 || p.RegionsDone != 5 || p.BytesCopied != 0 || p.RateBps != 0 || !p.Done || p.Epoch != 2 {
		t.Fatalf("sanitized report recorded as %+v", p)
	}
	if n := len(fc.reported); n != 0 {
		t.Fatalf("%d throttle marks kept after the run ended", n)
	}
}

func TestCoordinatorInSyncOnFSM(t *testing.T) {
	fc, id := newFSMCoordinator(t)
	ctx := context.Background()
	if err := fc.DropFromInSync(ctx, id, 1, "n1"); err != nil { // the owner: nothing to do
		t.Fatalf("dropping the owner: %v", err)
	}
	if got := fc.proposals(CmdLUNSetInSync); got != 0 {
		t.Fatalf("dropping the owner proposed %d commands", got)
	}
	if err := fc.DropFromInSync(ctx, id, 1, "n3"); err != nil {
		t.Fatal(err)
	}
	if err := fc.DropFromInSync(ctx, id, 1, "n3"); err != nil {
		t.Fatalf("second drop: %v", err)
	}
	v, err := fc.View(ctx, id)
	if err != nil || !slices.Equal(v.InSync, []replication.NodeID{"n1", "n2"}) || v.Owner != "n1" || v.Epoch != 1 {
		t.Fatalf("view %+v, %v", v, err)
	}
	if err := fc.MarkInSync(ctx, id, 1, "n4", replication.Generation{}); !errors.Is(err, ErrInvalid) || errors.Is(err, replication.ErrNotOwner) {
		t.Fatalf("marking a node without a copy: %v", err)
	}
	// The proposal names the LUN's ID, so the state machine can tell a
	// LUN created again under the same number from the old one.
	fc.mu.Lock()
	last := fc.proposed[len(fc.proposed)-1]
	fc.mu.Unlock()
	var p LUNSetInSync
	if err := decodePayload(last, &p); err != nil || p.ID != uint64(id) || p.IQN != iqnA || p.LUN != 0 || !p.InSync {
		t.Fatalf("proposal %+v, %v", p, err)
	}
	for _, c := range []Command{
		mustCmd(t, CmdLUNDelete, LUNDelete{IQN: iqnA, LUN: 0}),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2", "n3")}),
	} {
		if err := fc.fsm.ApplyCommand(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := fc.DropFromInSync(ctx, id, 1, "n2"); !errors.Is(err, replication.ErrNotOwner) || !strings.Contains(err.Error(), "no LUN with ID") {
		t.Fatalf("drop on a deleted LUN: %v", err)
	}
}

// TestCoordinatorCluster runs the Coordinator of every node of an
// in-process three-node cluster against one LUN with three copies.
func TestCoordinatorCluster(t *testing.T) {
	c := threeNodes(t)
	leader := c.leader()
	if err := c.apply(leader, CmdTargetCreate, TargetCreate{IQN: iqnA}); err != nil {
		t.Fatal(err)
	}
	l := lun(0)
	l.Replicas = 3
	if err := c.apply(leader, CmdLUNCreate, LUNCreate{LUN: l}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged("the LUN everywhere", func(s *State) bool {
		return s.Targets[iqnA] != nil && s.Targets[iqnA].LUNs[0] != nil
	})
	st := leader.FSM().State()
	created := st.Targets[iqnA].LUNs[0]
	id := replication.LUNID(created.ID)
	owner := created.Owner
	coords := map[string]*Coordinator{}
	for nid, n := range c.nodes {
		coords[nid] = NewCoordinator(n.Node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// committed waits until every node applied what the leader has, and
	// returns the LUN as all of them hold it.
	committed := func(what string, cond func(*LUN) bool) *LUN {
		t.Helper()
		var got *LUN
		c.waitConverged(what, func(s *State) bool {
			_, got = s.LUNByID(uint64(id))
			return got != nil && cond(got)
		})
		return got
	}
	leaderLUN := func() *LUN {
		_, l := c.leader().FSM().State().LUNByID(uint64(id))
		return l
	}

	// View: every node answers the committed view.
	for nid, co := range coords {
		v, err := co.View(ctx, id)
		if err != nil {
			t.Fatalf("%s: View: %v", nid, err)
		}
		if v.Epoch != 1 || string(v.Owner) != owner || len(v.Replicas) != 3 || !slices.Equal(v.Replicas, v.InSync) ||
			string(v.Replicas[0]) != created.Placement[0] {
			t.Fatalf("%s: View = %+v, LUN %+v", nid, v, created)
		}
	}
	if _, err := coords[owner].View(ctx, id+100); !errors.Is(err, replication.ErrNotOwner) ||
		!strings.Contains(err.Error(), "no LUN with ID ") {
		t.Fatalf("View of an unknown LUN: %v", err)
	}

	// Pick the roles: a mirror to drop, and a watcher on a node that is
	// not the leader (it sees commits through replication, not Apply).
	var mirror, other string
	for _, p := range created.Placement {
		if p != owner {
			if mirror == "" {
				mirror = p
			} else {
				other = p
			}
		}
	}
	watchNode := c.follower().id
	var (
		wmu      sync.Mutex
		views    []replication.View
		canceled atomic.Bool
	)
	stopWatch := coords[watchNode].Watch(id, func(v replication.View) {
		if canceled.Load() {
			t.Errorf("watcher called after cancel returned: %+v", v)
		}
		wmu.Lock()
		views = append(views, v)
		wmu.Unlock()
	})
	seen := func(cond func(replication.View) bool) bool {
		wmu.Lock()
		defer wmu.Unlock()
		return slices.ContainsFunc(views, cond)
	}

	// Drop, proposed from the mirror's own node (a follower forwards it,
	// or the leader runs it): committed when it returns.
	if err := coords[mirror].DropFromInSync(ctx, id, 1, replication.NodeID(mirror)); err != nil {
		t.Fatalf("drop %s: %v", mirror, err)
	}
	if l := leaderLUN(); slices.Contains(l.InSync, mirror) {
		t.Fatalf("drop returned before the leader applied it: %+v", l)
	}
	committed("the drop on every node", func(l *LUN) bool { return !slices.Contains(l.InSync, mirror) })
	c.waitFor("the watcher to see the drop", func() bool {
		return seen(func(v replication.View) bool { return v.Epoch == 1 && !v.IsInSync(replication.NodeID(mirror)) })
	})
	// Idempotent: again, and the owner (which never leaves).
	for _, n := range []string{mirror, owner} {
		if err := coords[other].DropFromInSync(ctx, id, 1, replication.NodeID(n)); err != nil {
			t.Fatalf("idempotent drop of %s: %v", n, err)
		}
	}
	if l := leaderLUN(); !slices.Contains(l.InSync, owner) || len(l.InSync) != 2 {
		t.Fatalf("after idempotent drops: %+v", l)
	}
	// Stale epochs.
	for _, e := range []uint64{0, 2} {
		err := coords[owner].DropFromInSync(ctx, id, e, replication.NodeID(other))
		if !errors.Is(err, replication.ErrNotOwner) || !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("drop at epoch %d: %v", e, err)
		}
	}

	// Resync progress of the dropped mirror, reported by the owner with a
	// stopped clock: the second quick report is left out, Done goes.
	co := coords[owner]
	co.now = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }
	started := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	report := func(done int64, fin bool) {
		t.Helper()
		if err := co.ReportProgress(ctx, id, 1, replication.NodeID(mirror), replication.Progress{
			RegionsTotal: 4, RegionsDone: done, BytesCopied: done << 20, Started: started, Rate: 5e5, ETA: 2 * time.Second, Done: fin,
		}); err != nil {
			t.Fatalf("report %d/4: %v", done, err)
		}
	}
	report(1, false)
	report(2, false)
	if p := leaderLUN().Resync[mirror]; p == nil || p.RegionsDone != 1 {
		t.Fatalf("after two quick reports the leader holds %+v, want the first", p)
	}
	committed("progress everywhere", func(l *LUN) bool { return l.Resync[mirror] != nil })
	for nid, n := range c.nodes {
		ls := n.Status().Targets[0].LUNs[0]
		cs := ls.Copies[slices.Index(ls.Placement, mirror)]
		if cs.State != CopyResyncing || cs.ResyncPercent != 25 || cs.BytesCopied != 1<<20 || cs.ETASeconds != 2 {
			t.Fatalf("%s: status of %s while resyncing: %+v", nid, mirror, cs)
		}
		if oc := ls.Copies[slices.Index(ls.Placement, other)]; oc.State != CopyInSync || oc.ResyncPercent != 100 {
			t.Fatalf("%s: status of %s: %+v", nid, other, oc)
		}
	}
	report(4, true)
	if p := leaderLUN().Resync[mirror]; p == nil || !p.Done || p.BytesCopied != 4<<20 {
		t.Fatalf("the Done report was not committed: %+v", p)
	}
	if err := coords[owner].MarkInSync(ctx, id, 1, replication.NodeID(mirror), replication.Generation{}); err != nil {
		t.Fatal(err)
	}
	if err := coords[watchNode].MarkInSync(ctx, id, 1, replication.NodeID(mirror), replication.Generation{}); err != nil {
		t.Fatalf("idempotent mark: %v", err)
	}
	committed("the mirror back in sync", func(l *LUN) bool { return len(l.InSync) == 3 })
	ls := c.leader().Status().Targets[0].LUNs[0]
	if cs := ls.Copies[slices.Index(ls.Placement, mirror)]; cs.State != CopyInSync || cs.BytesCopied != 4<<20 || cs.Owner {
		t.Fatalf("status of %s after rejoining: %+v", mirror, cs)
	}
	if cs := ls.Copies[slices.Index(ls.Placement, owner)]; !cs.Owner {
		t.Fatalf("owner not marked: %+v", cs)
	}

	// A new owner: the watcher sees epoch 2; the old epoch is refused.
	if err := c.apply(c.leader(), CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 0, Owner: mirror, Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the watcher to see the new owner", func() bool {
		return seen(func(v replication.View) bool { return v.Epoch == 2 && string(v.Owner) == mirror })
	})
	if err := coords[owner].MarkInSync(ctx, id, 1, replication.NodeID(owner), replication.Generation{}); !errors.Is(err, replication.ErrNotOwner) {
		t.Fatalf("in-sync change by the old owner: %v", err)
	}
	// Views came in commit order, each different from the one before.
	wmu.Lock()
	for i := 1; i < len(views); i++ {
		if views[i].Epoch < views[i-1].Epoch || sameView(views[i], views[i-1]) {
			t.Errorf("views out of order or repeated: %+v", views)
		}
	}
	wmu.Unlock()

	// After cancel returns, nothing more is delivered.
	stopWatch()
	canceled.Store(true)
	stopWatch() // twice is fine
	wmu.Lock()
	n := len(views)
	wmu.Unlock()
	if err := coords[mirror].DropFromInSync(ctx, id, 2, replication.NodeID(other)); err != nil {
		t.Fatal(err)
	}
	committed("the last drop", func(l *LUN) bool { return !slices.Contains(l.InSync, other) })
	wmu.Lock()
	if len(views) != n {
		t.Errorf("views delivered after cancel: %+v", views[n:])
	}
	wmu.Unlock()

	// A copy whose node is cut off shows offline, whatever else holds.
	cut := ""
	for _, p := range []string{owner, other} {
		if p != mirror && p != c.leader().id {
			cut = p
			break
		}
	}
	if cut == "" {
		t.Fatalf("no node to cut off (owner %s, leader %s)", mirror, c.leader().id)
	}
	c.partition(cut)
	c.waitFor(cut+" offline in the leader's status", func() bool {
		l := c.leader(cut)
		ls := l.Status().Targets[0].LUNs[0]
		return ls.Copies[slices.Index(ls.Placement, cut)].State == CopyOffline
	})
	c.heal(cut)
}

// TestCoordinatorWatchCancelWaits: cancel waits for a callback in progress,
// and a change pending at cancel is never delivered.
func TestCoordinatorWatchCancelWaits(t *testing.T) {
	fc, id := newFSMCoordinator(t)
	entered, release := make(chan replication.View, 10), make(chan struct{})
	var calls atomic.Int32
	cancel := fc.Watch(id, func(v replication.View) {
		calls.Add(1)
		entered <- v
		<-release
	})
	drop := func(node string) {
		t.Helper()
		if err := fc.DropFromInSync(context.Background(), id, 1, replication.NodeID(node)); err != nil {
			t.Fatal(err)
		}
	}
	drop("n3")
	if v := <-entered; v.IsInSync("n3") || len(v.InSync) != 2 {
		t.Fatalf("delivered %+v", v)
	}
	returned := make(chan struct{})
	go func() { cancel(); close(returned) }()
	drop("n2") // pending while the callback runs
	// cancel has begun once it unsubscribed (after it closed stop).
	for subscribed := true; subscribed; {
		fc.fsm.subMu.Lock()
		subscribed = len(fc.fsm.subs) > 0
		fc.fsm.subMu.Unlock()
		runtime.Gosched()
	}
	select {
	case <-returned:
		t.Fatal("cancel returned while the callback was still running")
	default:
	}
	close(release)
	<-returned
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d callbacks, want 1: the change pending at cancel was delivered", n)
	}
	// An unknown LUN: nothing to deliver, and cancel still returns.
	fc.Watch(id+7, func(replication.View) { t.Error("callback for an unknown LUN") })()
}

// CheckEpoch, the mirror's epoch check, knows exactly the epochs this
// node applied: the current one and older ones, not the next, and nothing
// of a LUN it does not hold.
func TestCoordinatorCheckEpoch(t *testing.T) {
	fc, id := newFSMCoordinator(t)
	epoch := fc.fsm.State().Targets[iqnA].LUNs[0].Epoch
	for _, e := range []uint64{0, epoch} {
		if err := fc.CheckEpoch(id, e); err != nil {
			t.Fatalf("epoch %d of a LUN at %d: %v", e, epoch, err)
		}
	}
	for _, c := range []struct {
		id    replication.LUNID
		epoch uint64
	}{{id, epoch + 1}, {id, math.MaxUint64}, {id + 1, 1}} {
		if err := fc.CheckEpoch(c.id, c.epoch); !errors.Is(err, replication.ErrEpochUnknown) {
			t.Fatalf("LUN %d epoch %d (applied: LUN %d at %d): %v, want ErrEpochUnknown", c.id, c.epoch, id, epoch, err)
		}
	}
	if err := fc.fsm.ApplyCommand(mustCmd(t, CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 0, Owner: "n2", Epoch: epoch})); err != nil {
		t.Fatal(err)
	}
	if err := fc.CheckEpoch(id, epoch+1); err != nil {
		t.Fatalf("epoch %d once applied: %v", epoch+1, err)
	}
}
