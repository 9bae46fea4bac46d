package agent

import (
	"testing"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// TestVerifyTrackerSpansCopies: a verify of two copies reports progress
// over the whole run: the second copy starts at 50 %, the counts add up,
// and a rate and an ETA come once bytes were compared.
func TestVerifyTrackerSpansCopies(t *testing.T) {
	var got []cluster.VerifyProgress
	tr := newVerifyTracker(2, 4, func(p cluster.VerifyProgress) { got = append(got, p) })
	run := func(i int, node string, divergent []int64) {
		onRegion := tr.copy(i, node)
		rep := replication.VerifyReport{Node: replication.NodeID(node), RegionsTotal: 4}
		for r := int64(0); r < 4; r++ {
			rep.Regions++
			rep.BytesCompared += 1 << 20
			for _, d := range divergent {
				if d == r {
					rep.Divergent = append(rep.Divergent, r)
				}
			}
			onRegion(rep)
		}
		tr.copyDone(rep)
	}
	run(0, "n2", nil)
	run(1, "n3", []int64{2})
	if len(got) != 8 {
		t.Fatalf("%d reports, want 8", len(got))
	}
	if p := got[3]; p.Percent() != 50 || p.Node != "n2" || p.Copy != 1 || p.Copies != 2 {
		t.Errorf("end of the first copy: %+v (%.0f%%)", p, p.Percent())
	}
	if p := got[4]; p.Node != "n3" || p.Copy != 2 || p.RegionsDone != 5 || p.RegionsTotal != 8 || p.BytesCompared != 5<<20 {
		t.Errorf("first region of the second copy: %+v", p)
	}
	if p := got[7]; p.Percent() != 100 || p.Divergent != 1 {
		t.Errorf("last report: %+v", p)
	}
	if p := got[5]; p.RateBps <= 0 || p.ETASeconds <= 0 {
		t.Errorf("no rate or ETA midway: %+v", p)
	}
}
