// Command cucount counts a verbose libiscsi iscsi-test-cu log:
//
//	stdbuf -o0 -e0 iscsi-test-cu -d -S -v URL > cu.log 2>&1
//	go run ./test/cucount [--list failed|skipped|passed] cu.log
//
// Every test run is counted once, by CUnit's own verdict: passed, skipped
// (CUnit passed it but libiscsi logged [SKIPPED]: the target lacks the
// feature) or failed. libiscsi's in-test "[FAILED]" lines are not verdicts.
// The last line is for scripts:
//
//	conformance: N passed, N skipped, N failed, N total[, incomplete]
//
// It exits 1 when the log is incomplete (no CUnit "Run Summary": the suite
// crashed, hung or was killed; the test it was in counts as failed), when
// its counts disagree with CUnit's summary, or when it holds no test at
// all; 2 on a usage error. test/conformance.sh runs it.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cucount", flag.ContinueOnError)
	fs.SetOutput(stderr)
	list := fs.String("list", "", "also list the runs with this `outcome` (failed, skipped or passed), with the reason")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cucount [--list failed|skipped|passed] ISCSI-TEST-CU-LOG")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	switch *list {
	case "", "failed", "skipped", "passed":
	default:
		fmt.Fprintf(stderr, "cucount: --list %q: want failed, skipped or passed\n", *list)
		return 2
	}
	b, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "cucount: %v\n", err)
		return 1
	}
	res := Parse(string(b))
	for _, r := range res.Runs {
		if r.Outcome.String() == *list {
			fmt.Fprintf(stdout, "%-8s %s  %s\n", r.Outcome, r.Name, r.Reason)
		}
	}
	p, s, f := res.Counts()
	status := 0
	if len(res.Runs) == 0 {
		fmt.Fprintf(stderr, "cucount: no test results in %s\n", fs.Arg(0))
		status = 1
	}
	if err := res.Check(); err != nil {
		fmt.Fprintf(stderr, "cucount: %s: %v\n", fs.Arg(0), err)
		status = 1
	}
	line := fmt.Sprintf("conformance: %d passed, %d skipped, %d failed, %d total", p, s, f, p+s+f)
	if !res.Complete {
		fmt.Fprintf(stderr, "cucount: %s stops after %d test runs, without CUnit's Run Summary (iscsi-test-cu crashed, hung or was killed: see its end); the test it was in counts as failed\n", fs.Arg(0), p+s+f)
		line += ", incomplete"
		status = 1
	}
	fmt.Fprintln(stdout, line)
	return status
}
