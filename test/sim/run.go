package sim

import (
	"fmt"
	"math/rand"
	"strings"
	"time"
)

// Result is one seed's run.
type Result struct {
	Seed     int64
	Nodes    int
	Schedule []Step
	Done     []string // what each step did, as it ran
	Report   *Report
	Counts   map[string]int
	Err      error // the run itself failed (a start, a heal)
	Logs     string
	Took     time.Duration
}

// Failed reports whether the run broke an invariant or could not run.
func (r *Result) Failed() bool { return r.Err != nil || r.Report == nil || r.Report.Failed() }

// Describe is the seed, the schedule, what happened, and the verdict.
func (r *Result) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d on %d nodes (rerun: go test ./test/sim -run TestSimSeed -sim.seed %d -sim.nodes %d -sim.steps %d)\n",
		r.Seed, r.Nodes, r.Seed, r.Nodes, len(r.Schedule))
	fmt.Fprintf(&b, "schedule:\n")
	for i, st := range r.Schedule {
		done := ""
		if i < len(r.Done) {
			done = "  -> " + r.Done[i]
		}
		fmt.Fprintf(&b, "  %d. %s%s\n", i+1, st, done)
	}
	if r.Err != nil {
		fmt.Fprintf(&b, "error: %v\n", r.Err)
	}
	if r.Report != nil {
		fmt.Fprintf(&b, "%s\n", r.Report.Summary())
		for _, p := range r.Report.Problems(8) {
			fmt.Fprintf(&b, "  %s\n", p)
		}
	}
	return b.String()
}

// Run runs one simulation: a cluster, the workload, the schedule (one
// fault at a time, each healed before the next), then the checks.
func Run(cfg Config, dir string, seed int64, schedule []Step) *Result {
	start := time.Now()
	res := &Result{Seed: seed, Nodes: cfg.Nodes, Schedule: schedule}
	s, err := New(cfg, dir)
	if err != nil {
		res.Err = err
		res.Took = time.Since(start)
		if s != nil {
			res.Logs = s.logs.tail(256 << 10)
		}
		return res
	}
	defer s.Close()
	if err := s.reserve(); err != nil {
		res.Err = err
		res.Took = time.Since(start)
		res.Logs = s.logs.tail(256 << 10)
		return res
	}
	stop := make(chan struct{})
	written, wait := s.runWorkload(seed, stop)
	rng := rand.New(rand.NewSource(seed ^ 0x5eed))
	var report, divergent, resv []string
	time.Sleep(time.Second) // writes before the first fault
	for _, st := range schedule {
		desc, err := s.inject(st, rng)
		res.Done = append(res.Done, desc)
		if err != nil {
			res.Err = fmt.Errorf("%s: %w", desc, err)
			break
		}
		if err := s.waitHealed(cfg.HealTimeout); err != nil {
			report = append(report, fmt.Sprintf("after %s: %v", desc, err))
			break
		}
		s.logs.mark("healed after %s", desc)
		for _, d := range s.compareCopies() {
			divergent = append(divergent, fmt.Sprintf("after %s: %s", desc, d))
		}
		for _, p := range s.checkReservations() {
			resv = append(resv, fmt.Sprintf("after %s: %s", desc, p))
		}
		time.Sleep(500 * time.Millisecond) // writes on the healed cluster
	}
	close(stop)
	wait()
	if err := s.waitHealed(cfg.HealTimeout); err != nil && len(report) == 0 {
		report = append(report, fmt.Sprintf("at the end: %v", err))
	}
	ops, epochs := s.hist.snapshot()
	final, div, err := s.settledState(written)
	if err != nil && res.Err == nil {
		res.Err = err
	}
	res.Report = Check(ops, epochs, final, s.modes)
	res.Report.Divergence = append(divergent, div...)
	res.Report.Unhealed = report
	res.Report.Reservations = resv
	res.Counts = s.Counts()
	res.Logs = s.logs.tail(1 << 20)
	res.Took = time.Since(start)
	return res
}
