package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// verifier serves online verify on the owner: every other copy of the LUN
// is compared with this node's, one after the other, while IO goes on.
func (h *replicaHost) verifier() cluster.LUNVerifier {
	return func(ctx context.Context, iqn string, lun uint64, repair bool) (*cluster.VerifyResult, error) {
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
		for _, node := range l.Placement {
			if node == h.self {
				continue
			}
			check := v.Verify
			if repair && slices.Contains(l.InSync, node) {
				check = v.Repair
			}
			rep, err := check(ctx, replication.NodeID(node))
			vc := cluster.VerifyCopy{Node: node, Regions: rep.Regions, BytesCompared: rep.BytesCompared, Divergent: rep.Divergent}
			if err != nil {
				vc.Error = err.Error()
			}
			res.Copies = append(res.Copies, vc)
		}
		return res, nil
	}
}
