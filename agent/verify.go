package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// verifier serves online verify on the owner: every other copy of the LUN
// is compared with this node's, one after the other, while IO goes on.
func (h *replicaHost) verifier() cluster.LUNVerifier {
	return func(ctx context.Context, iqn string, lun uint64, repair bool, progress func(cluster.VerifyProgress)) (*cluster.VerifyResult, error) {
		st := h.state()
		if st == nil {
			return nil, cluster.ErrNotLUNOwner
		}
		var l *cluster.LUN
		for _, t := range st.Targets {
			if strings.EqualFold(t.IQN, iqn) {
				l = t.LUNs[lun]
			}
		}
		if l == nil {
			return nil, &cluster.Error{Code: cluster.ErrUnknownLUN.Code, Message: fmt.Sprintf("no LUN %d on %s", lun, iqn)}
		}
		v := h.volume(l.ID)
		if l.Owner != h.self || v == nil || v.Serving() != nil {
			return nil, &cluster.Error{Code: cluster.ErrNotLUNOwner.Code,
				Message: fmt.Sprintf("node %s does not serve LUN %d of %s as its owner (the owner is %q)", h.self, lun, iqn, l.Owner)}
		}
		res := &cluster.VerifyResult{Target: l.Target, LUN: lun, Owner: h.self, Epoch: v.Epoch(),
			RegionSize: h.volumeConfig.RegionSize, Repair: repair}
		var others []string
		for _, node := range l.Placement {
			if node != h.self {
				others = append(others, node)
			}
		}
		rs := res.RegionSize
		track := newVerifyTracker(len(others), (int64(l.Size)+rs-1)/rs, progress)
		for i, node := range others {
			check := v.Verify
			if repair && slices.Contains(l.InSync, node) {
				check = v.Repair
			}
			rep, err := check(ctx, replication.NodeID(node), replication.OnRegion(track.copy(i, node)))
			track.copyDone(rep)
			vc := cluster.VerifyCopy{Node: node, Regions: rep.Regions, BytesCompared: rep.BytesCompared, Divergent: rep.Divergent}
			if err != nil {
				vc.Error = err.Error()
			}
			res.Copies = append(res.Copies, vc)
		}
		return res, nil
	}
}

// verifyTracker turns the per-region reports of a verify, one copy after
// the other, into progress over the whole run.
type verifyTracker struct {
	copies   int
	perCopy  int64 // regions of the LUN
	progress func(cluster.VerifyProgress)
	start    time.Time
	// Totals of the copies done.
	regions, bytes int64
	divergent      int
}

func newVerifyTracker(copies int, perCopy int64, progress func(cluster.VerifyProgress)) *verifyTracker {
	return &verifyTracker{copies: copies, perCopy: perCopy, progress: progress, start: time.Now()}
}

// copy returns the OnRegion function reporting the progress of the i-th
// copy.
func (t *verifyTracker) copy(i int, node string) func(replication.VerifyReport) {
	return func(r replication.VerifyReport) {
		if t.progress == nil {
			return
		}
		p := cluster.VerifyProgress{
			Node: node, Copy: i + 1, Copies: t.copies,
			RegionsDone: t.regions + r.Regions, RegionsTotal: t.perCopy * int64(t.copies),
			BytesCompared: t.bytes + r.BytesCompared, Divergent: t.divergent + len(r.Divergent),
		}
		if el := time.Since(t.start).Seconds(); el > 0 && p.BytesCompared > 0 {
			p.RateBps = float64(p.BytesCompared) / el
			if p.RegionsDone > 0 && p.RegionsTotal > p.RegionsDone {
				perRegion := float64(p.BytesCompared) / float64(p.RegionsDone)
				p.ETASeconds = float64(p.RegionsTotal-p.RegionsDone) * perRegion / p.RateBps
			}
		}
		t.progress(p)
	}
}

// copyDone adds a finished (or failed) copy's counts; a copy cut short
// counts as whole, so that the next one's progress starts where it ends.
func (t *verifyTracker) copyDone(r replication.VerifyReport) {
	t.regions += t.perCopy
	t.bytes += r.BytesCompared
	t.divergent += len(r.Divergent)
}
