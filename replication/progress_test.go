package replication

import (
	"context"
	"sync"
	"testing"
)

// progressRecorder is a Coordinator that records every progress report
// (MemCoordinator keeps only the last).
type progressRecorder struct {
	*MemCoordinator
	mu      sync.Mutex
	reports []Progress
}

func (r *progressRecorder) ReportProgress(ctx context.Context, lun LUNID, epoch uint64, node NodeID, p Progress) error {
	r.mu.Lock()
	r.reports = append(r.reports, p)
	r.mu.Unlock()
	return r.MemCoordinator.ReportProgress(ctx, lun, epoch, node, p)
}

// TestCompareResyncReportsRateAndETA: a write-back mirror that failed gets
// its unflushed regions compared, and most are found equal, so the resync
// copies (almost) nothing. Its reports while it runs must still show how
// far it got, at what rate and how long is left: the rate counted copied
// bytes only, so status showed no rate and no ETA until the end (and,
// before the reports moved to the end of each region, 0 % until 100 %).
func TestCompareResyncReportsRateAndETA(t *testing.T) {
	if testing.Short() {
		t.Skip("a resync held to 8 regions a second for about 4 s")
	}
	c := newTestCluster(t, 2<<20, "a", "b")
	rs := testConfig().RegionSize
	regions := c.size / rs // 32
	cfg := testConfig()
	// On the real clock (reports go once a second by it): 8 regions a
	// second, so the run takes at least 4 s whatever the machine, and a
	// slower machine only adds reports.
	cfg.ResyncRate = 8 * rs
	rec := &progressRecorder{MemCoordinator: c.coord}
	v := c.open("a", cfg, rec)
	// Every region reaches b's cache, unflushed; then b fails on a write
	// to the last region, which alone differs.
	if _, err := v.WriteAt(pattern(1, int(c.size)), 0); err != nil {
		t.Fatal(err)
	}
	c.cut("a", "b")
	if _, err := v.WriteAt(pattern(2, 4096), c.size-rs); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("b") {
		t.Fatal("b not dropped")
	}
	c.net.Heal("a", "b")
	if err := v.Resync(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	c.identical("a", "b")

	rec.mu.Lock()
	defer rec.mu.Unlock()
	mid := 0
	for _, p := range rec.reports {
		if p.Done || p.RegionsDone == 0 || p.RegionsDone >= p.RegionsTotal {
			continue
		}
		mid++
		if p.BytesDone != p.RegionsDone*rs || p.Rate <= 0 || p.ETA <= 0 {
			t.Errorf("report at %d of %d regions: bytes done %d, rate %.0f B/s, ETA %v; want %d bytes, a rate and an ETA",
				p.RegionsDone, p.RegionsTotal, p.BytesDone, p.Rate, p.ETA, p.RegionsDone*rs)
		}
	}
	if mid < 2 {
		t.Errorf("%d reports between the start and the end of a %d-region resync held to 8 regions/s, want several: %+v", mid, regions, rec.reports)
	}
	last := rec.reports[len(rec.reports)-1]
	if !last.Done || last.BytesCopied != rs || last.BytesDone != c.size {
		t.Errorf("last report %+v: want done, one region copied, every region gone through", last)
	}
}
