package cluster

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// reportState is the base log with LUN 0 (ID 1) on n1 (owner) and n2, and
// LUN 1 (ID 2) on n3 alone.
func reportState(t *testing.T) *FSM {
	f := NewFSM(nil)
	applyAll(t, f, append(baseLog(t),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2")}),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(1, "n3")})))
	return f
}

func report(t *testing.T, node string, copies ...LUNCopyReport) Command {
	return mustCmd(t, CmdCopyReport, CopiesReport{Node: node, Copies: copies})
}

func rep(id uint64, service string, since int64, lastErr string, at int64) LUNCopyReport {
	return LUNCopyReport{ID: id, CopyReport: CopyReport{Service: service, Since: since, LastError: lastErr, LastErrorAt: at}}
}

// TestCopyReportApply: copy.report keeps, per node and LUN, what the node
// reported; a refused report changes nothing; entries for LUNs not placed
// on the node are ignored, and a node's records of LUNs it no longer holds
// go at its next report, or with the node.
func TestCopyReportApply(t *testing.T) {
	f := reportState(t)
	for _, tc := range []struct {
		name string
		cmd  Command
		want *Error
	}{
		{"unknown node", report(t, "n9", rep(1, ServiceServing, 1, "", 0)), ErrUnknownNode},
		{"bad service", report(t, "n1", rep(1, "sleeping", 1, "", 0)), ErrInvalid},
		{"negative time", report(t, "n1", rep(1, ServiceFailed, -1, "x", 1)), ErrInvalid},
		{"error too long", report(t, "n1", rep(1, ServiceFailed, 1, strings.Repeat("e", MaxReportError+1), 1)), ErrInvalid},
		{"one bad entry refuses all", report(t, "n1", rep(1, ServiceServing, 1, "", 0), rep(1, "", 1, "", 0)), ErrInvalid},
	} {
		if err := f.ApplyCommand(tc.cmd); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want.Code)
		}
	}
	if r := f.State().Reports; len(r) != 0 {
		t.Fatalf("refused reports left %v", r)
	}

	// n2 reports LUN ID 1 (placed there) and ID 2 (not): only ID 1 kept.
	if err := f.ApplyCommand(report(t, "n2", rep(1, ServiceFailed, 1000, "disk gone", 1000), rep(2, ServiceServing, 5, "", 0))); err != nil {
		t.Fatal(err)
	}
	s := f.State()
	if got := s.Report("n2", 1); got == nil || got.Service != ServiceFailed || got.LastError != "disk gone" || got.Since != 1000 {
		t.Errorf("n2's report of LUN ID 1: %+v", got)
	}
	if got := s.Report("n2", 2); got != nil {
		t.Errorf("n2's report of LUN ID 2, not placed on n2, kept: %+v", got)
	}
	// Deep copies: changing a clone leaves the FSM's state.
	s.Reports["n2"][1].Service = ServiceServing
	if f.State().Report("n2", 1).Service != ServiceFailed {
		t.Error("State() shares the reports with the FSM")
	}
	// The snapshot keeps them.
	var b bytes.Buffer
	if err := EncodeState(&b, f.State()); err != nil {
		t.Fatal(err)
	}
	back, err := DecodeState(&b)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Report("n2", 1); got == nil || got.LastError != "disk gone" {
		t.Errorf("report after a snapshot round trip: %+v", got)
	}

	// LUN 0 deleted: n2's record goes at n2's next report (of anything).
	if err := f.ApplyCommand(mustCmd(t, CmdLUNDelete, LUNDelete{IQN: iqnA, LUN: 0})); err != nil {
		t.Fatal(err)
	}
	if err := f.ApplyCommand(report(t, "n2")); err != nil {
		t.Fatal(err)
	}
	if r := f.State().Reports["n2"]; r != nil {
		t.Errorf("n2's records after its LUN was deleted: %v", r)
	}
	// A removed node's records go with it.
	if err := f.ApplyCommand(report(t, "n3", rep(2, ServiceServing, 7, "", 0))); err != nil {
		t.Fatal(err)
	}
	if err := f.ApplyCommand(mustCmd(t, CmdNodeRemove, NodeRemove{ID: "n3"})); err != nil {
		t.Fatal(err)
	}
	if r := f.State().Reports; len(r) != 0 {
		t.Errorf("reports after n3 was removed: %v", r)
	}
}

// TestStatusShowsWhetherCopiesServe: each copy shows what its node
// reported (or offline, or unknown); a LUN whose owner failed, or is
// offline, is not served, and says so in Problems; a failed standby copy
// is a problem of its own.
func TestStatusShowsWhetherCopiesServe(t *testing.T) {
	f := reportState(t)
	st := func() *State { return f.State() }
	lunStatus := func(n uint64) LUNStatus { return st().LUNStatus(st().Targets[iqnA].LUNs[n]) }

	ls := lunStatus(0)
	if ls.Service != ServiceUnknown || ls.Copies[0].Service != ServiceUnknown || ls.Problem != "" {
		t.Errorf("before any report: LUN %q, n1 %q, problem %q; want unknown, no problem", ls.Service, ls.Copies[0].Service, ls.Problem)
	}
	at := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	ms := at.UnixMilli()
	if err := f.ApplyCommand(report(t, "n1", rep(1, ServiceFailed, ms, "block device: stat /dev/x: no such file", ms))); err != nil {
		t.Fatal(err)
	}
	if err := f.ApplyCommand(report(t, "n2", rep(1, ServiceStandby, ms, "", 0))); err != nil {
		t.Fatal(err)
	}
	ls = lunStatus(0)
	if ls.Service != ServiceNotServed || !strings.Contains(ls.Problem, "LUN 0 of "+iqnA+" is served by no node") ||
		!strings.Contains(ls.Problem, "owner n1 cannot serve it: block device: stat /dev/x") {
		t.Errorf("owner failed: service %q, problem %q", ls.Service, ls.Problem)
	}
	c := ls.Copies[0]
	if c.Service != ServiceFailed || !c.ServiceSince.Equal(at) || !c.LastErrorAt.Equal(at) || c.LastError == "" {
		t.Errorf("n1's copy: %+v", c.CopyService)
	}
	if ls.Copies[1].Service != ServiceStandby {
		t.Errorf("n2's copy: %+v", ls.Copies[1].CopyService)
	}

	// The owner recovers: served; the last error stays, with its time.
	later := at.Add(time.Minute).UnixMilli()
	if err := f.ApplyCommand(report(t, "n1", rep(1, ServiceServing, later, "block device: stat /dev/x: no such file", ms))); err != nil {
		t.Fatal(err)
	}
	ls = lunStatus(0)
	if ls.Service != ServiceServing || ls.Problem != "" || ls.Copies[0].LastError == "" || !ls.Copies[0].LastErrorAt.Equal(at) {
		t.Errorf("after recovery: %q %q %+v", ls.Service, ls.Problem, ls.Copies[0].CopyService)
	}

	// n2's copy fails: a problem, though the LUN is served.
	if err := f.ApplyCommand(report(t, "n2", rep(1, ServiceFailed, later, "file too large", later))); err != nil {
		t.Fatal(err)
	}
	// The owner's node dies: offline, whatever it reported; no in-sync
	// copy can take over (n2 failed).
	if err := f.ApplyCommand(mustCmd(t, CmdNodeHealth, NodeHealth{ID: "n1", Health: HealthDead})); err != nil {
		t.Fatal(err)
	}
	ls = lunStatus(0)
	if ls.Copies[0].Service != ServiceOffline || ls.Service != ServiceNotServed || !strings.Contains(ls.Problem, "owner n1 is offline and no other in-sync copy is alive") {
		t.Errorf("owner offline: %q %q %+v", ls.Service, ls.Problem, ls.Copies[0].CopyService)
	}
	status := Status{Targets: []TargetStatus{{IQN: iqnA, LUNs: []LUNStatus{ls, lunStatus(1)}}}}
	probs := status.lunProblems()
	if len(probs) != 2 || !strings.Contains(probs[1], "the copy of LUN 0 of "+iqnA+" on n2 failed: file too large") {
		t.Errorf("problems = %q", probs)
	}
	// Back alive (restarted, maybe): what it served before no longer
	// counts until it reports again; its last error stays.
	if err := f.ApplyCommand(mustCmd(t, CmdNodeHealth, NodeHealth{ID: "n1", Health: HealthAlive})); err != nil {
		t.Fatal(err)
	}
	ls = lunStatus(0)
	if c := ls.Copies[0]; c.Service != ServiceUnknown || ls.Service != ServiceUnknown || c.LastError == "" {
		t.Errorf("n1 back alive: LUN %q, copy %+v; want unknown, the last error kept", ls.Service, c.CopyService)
	}
	if err := f.ApplyCommand(report(t, "n1", rep(1, ServiceServing, later, "", 0))); err != nil {
		t.Fatal(err)
	}
	if ls = lunStatus(0); ls.Service != ServiceServing {
		t.Errorf("n1 reported again: LUN %q", ls.Service)
	}
}

// TestStatusTableShowsProblemsServiceAndErrors: "hatgt status" puts a
// PROBLEM line first for a LUN no node serves, NOT SERVED in its row,
// each copy's service and since when, and the last errors with when.
func TestStatusTableShowsProblemsServiceAndErrors(t *testing.T) {
	now := time.Date(2026, 11, 3, 12, 0, 40, 0, time.UTC)
	at := now.Add(-40 * time.Second)
	s := Status{Node: "n1", Leader: "n1", Problems: []string{"LUN 1 of " + iqnA + " is served by no node: its owner n1 cannot serve it: no block device"},
		Nodes: []NodeStatus{{ID: "n1", RaftRole: "leader", Alive: true, Health: "alive"}},
		Targets: []TargetStatus{{IQN: iqnA, LUNs: []LUNStatus{
			{LUN: LUN{LUN: 0, Size: 1 << 30, SectorSize: 512, IOMode: "wb", Backing: "fileio", Owner: "n1", Placement: []string{"n1"}, InSync: []string{"n1"}, Epoch: 1},
				Service: ServiceServing,
				Copies:  []CopyStatus{{Node: "n1", Owner: true, State: CopyInSync, ResyncPercent: 100, CopyService: CopyService{Service: ServiceServing, ServiceSince: at}}}},
			{LUN: LUN{LUN: 1, Size: 1 << 30, SectorSize: 512, IOMode: "wb", Backing: "blockio", Owner: "n1", Placement: []string{"n1"}, InSync: []string{"n1"}, Epoch: 1},
				Service: ServiceNotServed,
				Copies: []CopyStatus{{Node: "n1", Owner: true, State: CopyInSync, ResyncPercent: 100,
					CopyService: CopyService{Service: ServiceFailed, ServiceSince: at, LastError: "no block device /dev/x on this node", LastErrorAt: at}}}},
		}}},
	}
	var b bytes.Buffer
	if err := writeStatusTable(&b, s, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[1], "PROBLEM: LUN 1 of "+iqnA+" is served by no node") {
		t.Errorf("second line %q: want the PROBLEM line right under the summary", lines[1])
	}
	for _, want := range []string{"NOT SERVED", "serving", "failed", "40s ago", "LAST ERRORS",
		iqnA + " LUN 1 on n1, ", "(40s ago, still failing): no block device /dev/x on this node"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
