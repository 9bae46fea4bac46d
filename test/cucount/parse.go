package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Outcome is the verdict of one test run.
type Outcome int

const (
	Passed  Outcome = iota
	Skipped         // CUnit passed it, but libiscsi logged [SKIPPED]: the target lacks the feature
	Failed          // CUnit failed it, or the log ends before its verdict
)

func (o Outcome) String() string { return [...]string{"passed", "skipped", "failed"}[o] }

// Run is one test run of the log. A name that the suite runs more than
// once (the default run repeats some suites in several families) gets
// "#2", "#3" appended in order.
type Run struct {
	Name    string // Suite.Test
	Outcome Outcome
	Reason  string // the first [FAILED]/[SKIPPED] line or CUnit assertion, for listings
}

// Summary is CUnit's own "Run Summary" tests row, when the log has one.
type Summary struct {
	Ran, Passed, Failed int
}

// Result is what a log says.
type Result struct {
	Runs []Run
	// Complete is false when the log has no "Run Summary" (iscsi-test-cu
	// crashed, hung or was killed): the last test started then counts as
	// failed.
	Complete bool
	// CUnit is CUnit's summary row, nil when absent or unreadable.
	CUnit *Summary
}

// Counts returns passed, skipped and failed runs.
func (r *Result) Counts() (passed, skipped, failed int) {
	for _, run := range r.Runs {
		switch run.Outcome {
		case Passed:
			passed++
		case Skipped:
			skipped++
		default:
			failed++
		}
	}
	return
}

// Check reports a disagreement between the per-test verdicts found and
// CUnit's own summary: a sign that this parser misread the log.
func (r *Result) Check() error {
	if r.CUnit == nil {
		if r.Complete {
			return fmt.Errorf("the log's Run Summary has no readable tests row")
		}
		return nil
	}
	p, s, f := r.Counts()
	if p+s+f != r.CUnit.Ran || f != r.CUnit.Failed {
		return fmt.Errorf("found %d runs (%d failed), but CUnit's summary says %d ran and %d failed", p+s+f, f, r.CUnit.Ran, r.CUnit.Failed)
	}
	return nil
}

// CUnit's verbose basic interface writes "\nSuite: NAME" when a suite
// starts and "\n  Test: NAME ..." when a test starts; the test's own output
// follows (libiscsi's lines end in a newline), then CUnit's verdict,
// "passed", or "FAILED" and one "\n    N. file:line  - assertion" per
// failed assertion. What a test's teardown prints comes after the verdict,
// on the verdict's line. libiscsi's "[FAILED]" and "[SKIPPED]" are log
// lines inside a test, not verdicts.
var (
	markerRe   = regexp.MustCompile(`(?m)^(?:Suite: (\S+)|  Test: (\S+) \.\.\.|Run Summary:)`)
	verdictRe  = regexp.MustCompile(`(?m)^(passed|FAILED)`)
	testsRowRe = regexp.MustCompile(`(?m)^\s+tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)`)
)

// Parse reads a verbose iscsi-test-cu log.
func Parse(log string) *Result {
	res := &Result{}
	seen := map[string]int{}
	suite := ""
	locs := markerRe.FindAllStringSubmatchIndex(log, -1)
	for i, m := range locs {
		end := len(log)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		body := log[m[1]:end]
		switch {
		case m[2] >= 0: // Suite
			suite = log[m[2]:m[3]]
		case m[4] >= 0: // Test
			name := suite + "." + log[m[4]:m[5]]
			seen[name]++
			if n := seen[name]; n > 1 {
				name += "#" + strconv.Itoa(n)
			}
			res.Runs = append(res.Runs, judge(name, body))
		default: // Run Summary
			res.Complete = true
			if t := testsRowRe.FindStringSubmatch(body); t != nil {
				ran, _ := strconv.Atoi(t[2])
				passed, _ := strconv.Atoi(t[3])
				failed, _ := strconv.Atoi(t[4])
				res.CUnit = &Summary{Ran: ran, Passed: passed, Failed: failed}
			}
		}
	}
	return res
}

// judge finds a test's verdict in its body: the text after "Test: NAME
// ..." up to the next marker. A body without one is a test the log cut
// short: failed.
func judge(name, body string) Run {
	run := Run{Name: name, Outcome: Failed, Reason: "no verdict: the log ends inside this test"}
	v := verdictRe.FindStringSubmatchIndex(body)
	if v == nil {
		return run
	}
	before := body[:v[0]]
	if body[v[2]:v[3]] == "FAILED" {
		run.Reason = firstLine(body[v[0]:], "    1. ")
		if r := firstLine(before, "[FAILED]"); r != "" {
			run.Reason = r
		}
		return run
	}
	run.Outcome, run.Reason = Passed, ""
	if r := firstLine(before, "[SKIPPED]"); r != "" {
		run.Outcome, run.Reason = Skipped, r
	}
	return run
}

// firstLine returns the first line of s that contains sub, trimmed, or "".
func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			l = strings.TrimSpace(l)
			if len(l) > 160 {
				l = l[:160]
			}
			return l
		}
	}
	return ""
}
