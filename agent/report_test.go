package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// TestReconcileNotesEachCopy: every Reconcile says, per LUN placed here,
// whether this node serves it (owner), stands by (a copy), or failed and
// why, while the other LUNs are served.
func TestReconcileNotesEachCopy(t *testing.T) {
	f := newRecFixture(t, "n1")
	addLUN(f.st, 0, 1<<20, "n1", "n1")       // served here
	addLUN(f.st, 1, 1<<20, "n1", "n1")       // its file has another size
	addLUN(f.st, 2, 1<<20, "n2", "n2", "n1") // a copy here
	addLUN(f.st, 3, 1<<20, "n3", "n3")       // not here
	for n, l := range f.st.Targets[testIQN].LUNs {
		l.ID = n + 10
	}
	p := cluster.DefaultBackingPath(f.dir, testIQN, 1, 11)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, make([]byte, 4096), 0o640); err != nil {
		t.Fatal(err)
	}
	var got map[uint64]copyOutcome
	f.rec.report = func(o map[uint64]copyOutcome) { got = o }
	if err := f.reconcile(); err == nil {
		t.Fatal("reconcile with LUN 1's file of another size succeeded")
	}
	if len(got) != 3 {
		t.Fatalf("outcomes %v: want LUNs 0, 1 and 2 (not 3, placed elsewhere)", got)
	}
	if o := got[10]; o.service != cluster.ServiceServing || o.err != "" {
		t.Errorf("LUN 0: %+v, want serving", o)
	}
	if o := got[11]; o.service != cluster.ServiceFailed || !strings.Contains(o.err, "is 4096 bytes, not the LUN's 1048576") {
		t.Errorf("LUN 1: %+v, want failed with the size mismatch", o)
	}
	if o := got[12]; o.service != cluster.ServiceStandby {
		t.Errorf("LUN 2: %+v, want standby", o)
	}
	// The same state again: LUN 0 still served (already open).
	if err := f.reconcile(); err == nil {
		t.Fatal("second reconcile succeeded")
	}
	if o := got[10]; o.service != cluster.ServiceServing {
		t.Errorf("LUN 0 on the second reconcile: %+v", o)
	}
}

// reporterFixture runs a reporter against an FSM holding n1..n3 and LUNs
// with IDs 1 (on n1 and n2) and 2 (on n3), counting its reports.
type reporterFixture struct {
	t       *testing.T
	fsm     *cluster.FSM
	rep     *reporter
	now     time.Time
	mu      sync.Mutex
	reports []cluster.CopiesReport
}

func newReporterFixture(t *testing.T) *reporterFixture {
	f := &reporterFixture{t: t, fsm: cluster.NewFSM(nil), now: time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)}
	apply := func(typ string, p any) {
		t.Helper()
		cmd, err := cluster.NewCommand(typ, p)
		if err == nil {
			err = f.fsm.ApplyCommand(cmd)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		apply(cluster.CmdNodeRegister, cluster.NodeRegister{Node: cluster.NodeInfo{ID: id, APIAddr: "127.0.0.1:1", RaftAddr: "127.0.0.1:2"}})
	}
	apply(cluster.CmdTargetCreate, cluster.TargetCreate{IQN: testIQN})
	for n, pl := range [][]string{{"n1", "n2"}, {"n3"}} {
		apply(cluster.CmdLUNCreate, cluster.LUNCreate{LUN: cluster.LUN{Target: testIQN, LUN: uint64(n), Size: 1 << 20, SectorSize: 512,
			IOMode: "wb", Backing: "fileio", Replicas: len(pl), Placement: pl, Owner: pl[0]}})
	}
	f.rep = newReporter(slog.New(slog.DiscardHandler), "n1", f.fsm.State, func(_ context.Context, cmd cluster.Command) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		var p cluster.CopiesReport
		if err := json.Unmarshal(cmd.Payload, &p); err != nil {
			return err
		}
		f.reports = append(f.reports, p)
		return f.fsm.ApplyCommand(cmd)
	})
	f.rep.now = func() time.Time { return f.now }
	f.rep.started = f.now
	return f
}

// step observes out at the fixture's time and sends what is pending, as
// one turn of run does.
func (f *reporterFixture) step(out map[uint64]copyOutcome) *cluster.CopiesReport {
	f.t.Helper()
	f.rep.observe(out)
	rep := f.rep.pending(f.fsm.State())
	if rep == nil {
		return nil
	}
	cmd, _ := cluster.NewCommand(cluster.CmdCopyReport, rep)
	if err := f.rep.apply(context.Background(), cmd); err != nil {
		f.t.Fatal(err)
	}
	f.rep.sent(rep)
	return rep
}

// TestReporterReportsOnlyChanges: the first outcome of a copy is
// reported; the same outcome again is not (a copy failing the same way
// at every retry writes nothing); a change of service is, at once; a new
// error text of a copy still failing waits errorTextInterval; a recovery
// keeps the last error and its time.
func TestReporterReportsOnlyChanges(t *testing.T) {
	f := newReporterFixture(t)
	failed := map[uint64]copyOutcome{1: {service: cluster.ServiceFailed, err: "no block device /dev/x"}}
	if rep := f.step(failed); rep == nil || len(rep.Copies) != 1 || rep.Copies[0].Service != cluster.ServiceFailed {
		t.Fatalf("first outcome: report %+v", rep)
	}
	got := f.fsm.State().Report("n1", 1)
	if got == nil || got.LastError != "no block device /dev/x" || got.Since != f.now.UnixMilli() || got.LastErrorAt != f.now.UnixMilli() {
		t.Fatalf("state holds %+v", got)
	}
	start := f.now
	for range 5 { // retries every 2 s, same failure
		f.now = f.now.Add(2 * time.Second)
		if rep := f.step(failed); rep != nil {
			t.Fatalf("the same failure reported again: %+v", rep)
		}
	}
	// Another text: held back for errorTextInterval.
	other := map[uint64]copyOutcome{1: {service: cluster.ServiceFailed, err: "permission denied"}}
	if rep := f.step(other); rep != nil {
		t.Errorf("a new error text %v after the last report: reported at once: %+v", f.now.Sub(start), rep)
	}
	f.now = start.Add(errorTextInterval)
	if rep := f.step(other); rep == nil || rep.Copies[0].LastError != "permission denied" || rep.Copies[0].Since != start.UnixMilli() {
		t.Errorf("a new error text after %v: %+v, want reported, failing since the start", errorTextInterval, rep)
	}
	// Recovery: at once; the last error stays.
	f.now = f.now.Add(time.Second)
	if rep := f.step(map[uint64]copyOutcome{1: {service: cluster.ServiceServing}}); rep == nil {
		t.Fatal("recovery not reported")
	}
	got = f.fsm.State().Report("n1", 1)
	if got.Service != cluster.ServiceServing || got.Since != f.now.UnixMilli() || got.LastError != "permission denied" {
		t.Errorf("after recovery the state holds %+v", got)
	}
	// A LUN not placed here (ID 2 is on n3) is never reported.
	if rep := f.step(map[uint64]copyOutcome{1: {service: cluster.ServiceServing}, 2: {service: cluster.ServiceServing}}); rep != nil {
		t.Errorf("reported %+v", rep)
	}
}

// TestReporterRestartReportsSince: a node restarted reports a copy whose
// service did not change once, so its SINCE is the restart (status showed
// "standby since 6m" on a node up for seconds); then, the state holding
// this run's record, nothing more — even when the apply of that report
// answered an error (an ambiguous commit): the state decides, not the
// answer.
func TestReporterRestartReportsSince(t *testing.T) {
	f := newReporterFixture(t)
	standby := map[uint64]copyOutcome{1: {service: cluster.ServiceStandby}}
	if rep := f.step(standby); rep == nil {
		t.Fatal("first outcome not reported")
	}
	before := f.fsm.State().Report("n1", 1).Since
	// The process restarts ten minutes later, the copy standby again.
	f.now = f.now.Add(10 * time.Minute)
	old := f.rep
	f.rep = newReporter(slog.New(slog.DiscardHandler), "n1", f.fsm.State, func(ctx context.Context, cmd cluster.Command) error {
		if err := old.apply(ctx, cmd); err != nil {
			return err
		}
		return errors.New("leadership lost (the entry committed all the same)")
	})
	f.rep.now = func() time.Time { return f.now }
	f.rep.started = f.now
	f.rep.observe(standby)
	rep := f.rep.pending(f.fsm.State())
	if rep == nil || len(rep.Copies) != 1 || rep.Copies[0].Since != f.now.UnixMilli() {
		t.Fatalf("after a restart: report %+v, want the copy standby since the restart (the state says since %d)", rep, before)
	}
	cmd, _ := cluster.NewCommand(cluster.CmdCopyReport, rep)
	if err := f.rep.apply(context.Background(), cmd); err == nil {
		t.Fatal("the ambiguous apply answered no error")
	}
	if got := f.fsm.State().Report("n1", 1).Since; got != f.now.UnixMilli() {
		t.Fatalf("the state holds since %d, want %d", got, f.now.UnixMilli())
	}
	for range 3 {
		f.now = f.now.Add(5 * time.Second)
		f.rep.observe(standby)
		if rep := f.rep.pending(f.fsm.State()); rep != nil {
			t.Fatalf("reported again once the state held this run's record: %+v", rep)
		}
	}
}

// TestReporterDropsRecordsOfLUNsGone: a record the state holds of a LUN
// no longer placed here is dropped by a report, even with nothing new.
func TestReporterDropsRecordsOfLUNsGone(t *testing.T) {
	f := newReporterFixture(t)
	f.step(map[uint64]copyOutcome{1: {service: cluster.ServiceServing}})
	cmd, _ := cluster.NewCommand(cluster.CmdLUNDelete, cluster.LUNDelete{IQN: testIQN, LUN: 0})
	if err := f.fsm.ApplyCommand(cmd); err != nil {
		t.Fatal(err)
	}
	if rep := f.step(map[uint64]copyOutcome{}); rep == nil || len(rep.Copies) != 0 {
		t.Fatalf("after the delete: report %+v, want one without entries", rep)
	}
	if r := f.fsm.State().Reports["n1"]; len(r) != 0 {
		t.Errorf("n1's records after its LUN was deleted: %v", r)
	}
	if rep := f.step(map[uint64]copyOutcome{}); rep != nil {
		t.Errorf("reported again: %+v", rep)
	}
}

// TestReporterRunReportsAndRetries: run reports what observe found, and
// retries a report that could not be committed.
func TestReporterRunReportsAndRetries(t *testing.T) {
	f := newReporterFixture(t)
	f.rep.retry = 10 * time.Millisecond
	var mu sync.Mutex
	fails := 1
	inner := f.rep.apply
	f.rep.apply = func(ctx context.Context, cmd cluster.Command) error {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return context.DeadlineExceeded // no leader
		}
		return inner(ctx, cmd)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); f.rep.run(ctx) }()
	f.rep.observe(map[uint64]copyOutcome{1: {service: cluster.ServiceFailed, err: "boom"}})
	deadline := time.Now().Add(30 * time.Second) // a bound, not a timing assertion
	for f.fsm.State().Report("n1", 1) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the report never reached the state")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reports) != 1 {
		t.Errorf("%d reports committed, want 1", len(f.reports))
	}
}

// TestReporterWaitsForAnOlderLeader: a leader that does not know
// copy.report (a rolling upgrade) is not asked again at every retry, each
// refusal being one more entry in the Raft log.
func TestReporterWaitsForAnOlderLeader(t *testing.T) {
	f := newReporterFixture(t)
	f.rep.retry, f.rep.interval = time.Millisecond, time.Millisecond
	f.rep.oldLeaderWait = time.Hour
	var mu sync.Mutex
	calls := 0
	f.rep.apply = func(context.Context, cluster.Command) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return &cluster.Error{Code: cluster.ErrUnknownCommand.Code, Message: "unknown command type \"copy.report\""}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.rep.run(ctx) }()
	f.rep.observe(map[uint64]copyOutcome{1: {service: cluster.ServiceServing}})
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := calls
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no report tried")
		}
		time.Sleep(time.Millisecond)
	}
	for _, s := range []string{cluster.ServiceFailed, cluster.ServiceStandby, cluster.ServiceServing} {
		f.rep.observe(map[uint64]copyOutcome{1: {service: s, err: "x"}})
		time.Sleep(20 * time.Millisecond) // room for retries, were they made
	}
	cancel()
	<-done
	if calls != 1 {
		t.Errorf("%d reports tried against a leader that refused the first as unknown, want 1", calls)
	}
}
