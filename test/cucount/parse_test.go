package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The logs in testdata are real iscsi-test-cu 1.19 output (Debian
// libiscsi-bin) against hatgt, cut where noted.

func readLog(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseRealLogs(t *testing.T) {
	tests := []struct {
		log                     string
		passed, skipped, failed int
		complete                bool
	}{
		// The whole default run: CUnit's summary says 615 ran, 0 failed.
		{"full-rw.log", 561, 54, 0, true},
		// The write-protect run on a read-only LUN.
		{"full-ro.log", 4, 1, 0, true},
		// A test that CUnit failed (WRITE 10 on a read-only LUN), after
		// one that passed; libiscsi's [FAILED] lines precede the verdict.
		{"failed.log", 1, 0, 1, true},
		// The first lines of a run: no Run Summary, and the log ends
		// right after "Test: ValidTgtDescr ...": that test failed.
		{"start.log", 8, 1, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.log, func(t *testing.T) {
			res := Parse(readLog(t, tc.log))
			p, s, f := res.Counts()
			if p != tc.passed || s != tc.skipped || f != tc.failed || res.Complete != tc.complete {
				t.Errorf("got %d passed, %d skipped, %d failed, complete %v; want %d, %d, %d, %v",
					p, s, f, res.Complete, tc.passed, tc.skipped, tc.failed, tc.complete)
			}
			if err := res.Check(); err != nil {
				t.Errorf("Check: %v", err)
			}
		})
	}
}

// A passed test whose teardown printed libiscsi's "[FAILED] PRIN ..." on
// the verdict's line is passed (the old grep counted it failed); one that
// logged [SKIPPED] before its verdict is skipped; one that logged only
// [INFO] lines is passed.
func TestVerdictIsCUnitsNotLibiscsis(t *testing.T) {
	res := Parse(readLog(t, "reserve-sanitize.log"))
	want := map[string]Outcome{
		".ITNexusLoss":          Passed, // the excerpt starts inside this test's body
		"Sanitize.BlockErase":   Passed,
		"Sanitize.CryptoErase":  Skipped,
		"Sanitize.Readonly":     Skipped,
		"Sanitize.Reset":        Passed,
		".LUNReset":             Passed,
		".TargetWarmReset":      Passed,
		"Sanitize.Overwrite":    Passed,
		"Sanitize.Reservations": Skipped,
	}
	got := map[string]Outcome{}
	for _, r := range res.Runs {
		got[r.Name] = r.Outcome
	}
	for name, o := range want {
		if g, ok := got[name]; !ok || g != o {
			t.Errorf("%s: got %v (found %v), want %v; runs: %v", name, g, ok, o, res.Runs)
		}
	}
}

// Failed runs list the assertion or libiscsi's reason; a repeated test
// gets #2.
func TestReasonsAndRepeats(t *testing.T) {
	res := Parse(readLog(t, "failed.log"))
	if r := res.Runs[1]; r.Name != "Write10.Simple" || !strings.Contains(r.Reason, "WRITE_PROTECTED") {
		t.Errorf("failed run = %+v, want Write10.Simple with libiscsi's reason", r)
	}
	res = Parse(readLog(t, "full-rw.log"))
	n := 0
	for _, r := range res.Runs {
		if r.Name == "MultipathIO.Simple#2" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("MultipathIO.Simple#2 found %d times, want once (the suite runs in two families)", n)
	}
}

// The tail of a log whose summary says 615 runs, but only 7 runs are in
// it: the counts disagree with CUnit, and Check says so.
func TestCheckCatchesAMisread(t *testing.T) {
	res := Parse(readLog(t, "end.log"))
	if err := res.Check(); err == nil {
		t.Errorf("4 runs against a summary of 615 passed Check")
	}
}

func TestCommandLine(t *testing.T) {
	var out, errb bytes.Buffer
	if rc := run([]string{"--list", "failed", filepath.Join("testdata", "failed.log")}, &out, &errb); rc != 0 {
		t.Fatalf("exit %d: %s", rc, errb.String())
	}
	want := "conformance: 1 passed, 0 skipped, 1 failed, 2 total\n"
	if !strings.HasPrefix(out.String(), "failed   Write10.Simple") || !strings.HasSuffix(out.String(), want) {
		t.Errorf("output %q, want the failed run listed, then %q", out.String(), want)
	}
	out.Reset()
	if rc := run([]string{filepath.Join("testdata", "start.log")}, &out, &errb); rc != 1 || !strings.HasSuffix(out.String(), ", incomplete\n") {
		t.Errorf("truncated log: exit %d, output %q; want exit 1 and an incomplete count", rc, out.String())
	}
	if rc := run([]string{"--list", "bogus", "x"}, &out, &errb); rc != 2 {
		t.Errorf("bad --list: exit %d, want 2", rc)
	}
}
