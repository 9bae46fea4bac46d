package sim

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	flagSeed  = flag.Int64("sim.seed", 0, "run this seed only (TestSimSeed), as a failure printed it")
	flagSteps = flag.Int("sim.steps", 6, "faults per seed")
	flagNodes = flag.Int("sim.nodes", 0, "nodes per cluster (default 3)")
	flagSoak  = flag.Duration("sim.soak", 0, "TestSimSoak: run new seeds for this long")
	flagLogs  = flag.Bool("sim.logs", false, "print the cluster's logs (the last MiB) of every run")
)

// ciSeeds are the seeds CI runs on every change, with their cluster size.
// Together their schedules draw every fault kind (TestCISeedsDrawEveryFault):
// seeds 1-4 alone never isolated a node, filled a disk or restarted the
// cluster; 5 and 6 do.
var ciSeeds = []struct {
	seed  int64
	nodes int
}{{1, 3}, {2, 3}, {3, 3}, {5, 3}, {4, 5}, {6, 5}}

// totals adds up the runs of this test binary for the summary line.
var totals struct {
	sync.Mutex
	seeds   int
	faults  map[string]int
	acked   int
	lost    int
	stale   int
	diverge int
	resv    int
}

func TestMain(m *testing.M) {
	flag.Parse()
	totals.faults = map[string]int{}
	code := m.Run()
	if totals.seeds > 0 {
		line := fmt.Sprintf("sim: faults injected: %s; writes acknowledged %d, lost %d, stale reads %d, divergent copies %d, reservations lost %d; seeds run %d",
			FormatCounts(totals.faults), totals.acked, totals.lost, totals.stale, totals.diverge, totals.resv, totals.seeds)
		fmt.Println(line)
		if p := os.Getenv("HATGT_SIM_SUMMARY"); p != "" {
			os.WriteFile(p, []byte(line+"\n"), 0o644)
		}
	}
	os.Exit(code)
}

func simConfig(nodes int) Config {
	c := DefaultConfig()
	if nodes > 0 {
		c.Nodes = nodes
	}
	if *flagNodes > 0 {
		c.Nodes = *flagNodes
	}
	return c
}

func runSeed(t *testing.T, seed int64, schedule []Step) *Result {
	t.Helper()
	return runSeedOn(t, 0, seed, schedule)
}

func runSeedOn(t *testing.T, nodes int, seed int64, schedule []Step) *Result {
	t.Helper()
	dir := t.TempDir()
	res := Run(simConfig(nodes), dir, seed, schedule)
	totals.Lock()
	totals.seeds++
	for k, v := range res.Counts {
		totals.faults[k] += v
	}
	if r := res.Report; r != nil {
		totals.acked += r.AckedWrites
		totals.lost += len(r.Lost)
		totals.stale += len(r.Stale)
		totals.diverge += len(r.Divergence)
		totals.resv += len(r.Reservations)
	}
	totals.Unlock()
	t.Logf("%s(took %v)", res.Describe(), res.Took.Round(time.Second))
	if *flagLogs {
		t.Logf("cluster logs (tail):\n%s", res.Logs)
	}
	if res.Failed() {
		t.Errorf("seed %d failed (see above; -sim.logs prints the cluster's logs)", seed)
	}
	return res
}

// TestSim runs CI's fixed seeds: each a random schedule of every fault
// kind, one after the other, under the workload.
func TestSim(t *testing.T) {
	if testing.Short() {
		t.Skip("the simulator runs for minutes; skipped with -short")
	}
	for _, c := range ciSeeds {
		t.Run(fmt.Sprintf("%d-nodes%d", c.seed, c.nodes), func(t *testing.T) {
			runSeedOn(t, c.nodes, c.seed, Schedule(c.seed, *flagSteps, AllFaults))
		})
	}
}

// TestCISeedsDrawEveryFault keeps CI's seeds honest: a fault kind no
// CI schedule draws is a fault CI never injects.
func TestCISeedsDrawEveryFault(t *testing.T) {
	drawn := map[string]bool{}
	for _, c := range ciSeeds {
		for _, st := range Schedule(c.seed, *flagSteps, AllFaults) {
			drawn[st.Kind] = true
		}
	}
	for _, k := range AllFaults {
		if !drawn[k] {
			t.Errorf("no CI seed's schedule of %d steps draws %q: pick seeds that do", *flagSteps, k)
		}
	}
}

// TestSimSeed reruns one seed: go test ./test/sim -run TestSimSeed -sim.seed N.
func TestSimSeed(t *testing.T) {
	if *flagSeed == 0 {
		t.Skip("give -sim.seed N")
	}
	runSeed(t, *flagSeed, Schedule(*flagSeed, *flagSteps, AllFaults))
}

// TestSimSoak runs new seeds until -sim.soak has passed.
func TestSimSoak(t *testing.T) {
	if *flagSoak == 0 {
		t.Skip("give -sim.soak DURATION")
	}
	end := time.Now().Add(*flagSoak)
	for seed := time.Now().UnixNano() % 1e9; time.Now().Before(end); seed++ {
		if res := runSeed(t, seed, Schedule(seed, *flagSteps, AllFaults)); res.Failed() {
			return
		}
	}
}

// scenarios are fixed schedules aimed at one invariant each; a
// deliberately broken build of that invariant must fail its scenario.
var scenarios = map[string][]Step{
	// The owner stalls past its lease with commands queued: a lease
	// checked only by a poller serves them stale (hatgt_broken_nolease).
	"pause-owner": {{FaultPause, "owner0", 3 * time.Second}, {FaultPause, "owner1", 3 * time.Second}},
	// The owner dies with writes in flight: an owner that acknowledged
	// before its mirrors answered loses them (hatgt_broken_ackearly).
	// (down for 3 s: a mirror takes over; a node back before the
	// failover would give its own copy back to the mirrors.)
	"crash-owner": {{FaultPowerLoss, "owner0", time.Second}, {FaultCutKill, "owner0", 3 * time.Second},
		{FaultKill, "owner0", time.Second}, {FaultCutKill, "owner1", 3 * time.Second}},
	// A write-back mirror loses power while it is resynced: a dirty bit
	// cleared before the copy was durable leaves it incomplete but in
	// sync (hatgt_broken_dirtyclear).
	"resync-power-loss": {{FaultResyncPL, "mirror1", 2 * time.Second}, {FaultResyncPL, "mirror1", 2 * time.Second}},
}

func TestSimScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("the simulator runs for minutes; skipped with -short")
	}
	for name, steps := range scenarios {
		t.Run(name, func(t *testing.T) { runSeed(t, 7, steps) })
	}
}

// TestSimCatchesBrokenBuilds builds hatgt with each deliberate bug (build
// tags) and runs the scenario aimed at it: the simulator must fail it.
func TestSimCatchesBrokenBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("the simulator runs for minutes; skipped with -short")
	}
	if os.Getenv("HATGT_SIM_BROKEN") != "" {
		t.Skip("inside a broken build")
	}
	for _, tc := range []struct {
		tag, scenario string
		findings      []string // what the checker may report
	}{
		{"hatgt_broken_nolease", "pause-owner", []string{"stale read"}},
		// An owner that dies after acknowledging writes its mirrors
		// never got: lost on the new owner, or read back older.
		{"hatgt_broken_ackearly", "crash-owner", []string{"lost", "stale read"}},
		{"hatgt_broken_dirtyclear", "resync-power-loss", []string{"divergent", "lost"}},
		// Reservations each node keeps for itself: a new owner knows
		// none, a standby reads no keys.
		{"hatgt_broken_resvlocal", "crash-owner", []string{"reservation"}},
	} {
		t.Run(tc.tag, func(t *testing.T) {
			cmd := exec.Command("go", "test", "-count=1", "-tags", tc.tag, "-run", "TestSimScenario/"+tc.scenario+"$", "-v", ".")
			cmd.Env = append(os.Environ(), "HATGT_SIM_BROKEN=1", "HATGT_SIM_SUMMARY=")
			out, err := cmd.CombinedOutput()
			os.WriteFile(filepath.Join(t.TempDir(), "out.txt"), out, 0o644)
			if err == nil {
				t.Fatalf("the simulator passed a build broken with %s:\n%s", tc.tag, tail(string(out), 4000))
			}
			caught := ""
			for _, l := range strings.Split(string(out), "\n") {
				for _, f := range tc.findings {
					if caught == "" && strings.HasPrefix(strings.TrimSpace(l), f+":") {
						caught = strings.TrimSpace(l)
					}
				}
			}
			if caught == "" {
				t.Fatalf("the %s build failed, but not with a finding of %q:\n%s", tc.tag, tc.findings, tail(string(out), 4000))
			}
			t.Logf("%s caught: %s", tc.tag, caught)
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestSimLeaveAndRemove: the owner leaves, then an owner is removed; both
// rejoin as new machines and get full copies.
func TestSimLeaveAndRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("the simulator runs for minutes; skipped with -short")
	}
	runSeed(t, 11, []Step{{FaultLeave, "owner0", time.Second}, {FaultRemove, "owner1", time.Second}})
}
