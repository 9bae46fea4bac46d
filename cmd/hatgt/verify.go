package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hatgt/hatgt/agent"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// replicationRegionSize is the region size of verify (and of the resync
// maps), for the sizes a progress line shows.
var replicationRegionSize = replication.DefaultConfig().RegionSize

// errCopiesDiffer makes "hatgt lun verify" exit 1 after printing what
// differs.
var errCopiesDiffer = errors.New("lun verify: the copies are not identical (hatgt lun verify --repair rewrites the regions that differ from the owner's copy)")

// errCopiesRepaired makes "hatgt lun verify --repair" exit 1 when it found
// (and rewrote) divergent regions, or could not compare a copy.
var errCopiesRepaired = errors.New("lun verify: divergent regions were found and rewritten from the owner's copy")

// verifyLUN runs "hatgt lun verify": it finds the LUN's owner in the status
// of the node it talks to, asks the owner (only it has the volume) to
// compare every copy, and prints one line per copy and per divergent
// region.
func (c *clusterCLI) verifyLUN(ctx context.Context, cl *cluster.Client, iqn string, lun uint64, repair bool) error {
	st, err := cl.Status(ctx)
	if err != nil {
		return err
	}
	var l *cluster.LUN
	for _, t := range st.Targets {
		if strings.EqualFold(t.IQN, iqn) {
			for i := range t.LUNs {
				if t.LUNs[i].LUN.LUN == lun {
					l = &t.LUNs[i].LUN
				}
			}
			iqn = t.IQN
		}
	}
	if l == nil {
		return fmt.Errorf("lun verify: no LUN %d on target %s", lun, iqn)
	}
	if len(l.Placement) < 2 {
		fmt.Fprintf(c.out, "LUN %d of %s has one copy (on %s): nothing to compare\n", lun, iqn, l.Owner)
		return nil
	}
	owner := ""
	for _, n := range st.Nodes {
		if n.ID == l.Owner {
			owner = n.APIAddr
		}
	}
	if owner == "" {
		return fmt.Errorf("lun verify: the owner %q of LUN %d has no admin API address in the cluster state", l.Owner, lun)
	}
	// Progress goes to stderr while the owner reads the copies (about
	// 10 s per GiB per copy at the default resync rate).
	pp := newProgressPrinter(c.errOut)
	rs := replicationRegionSize
	res, err := cluster.NewClient(owner, c.token, &http.Client{}).VerifyLUNProgress(ctx, iqn, lun, repair, func(p cluster.VerifyProgress) {
		pp.update(verifyProgressLine(p, rs))
	})
	pp.done()
	if err != nil {
		return fmt.Errorf("lun verify on the owner %s (%s): %w", l.Owner, owner, c.explain(err))
	}
	printVerify(c, res)
	if !res.Identical() {
		if repair {
			return errCopiesRepaired
		}
		return errCopiesDiffer
	}
	return nil
}

func printVerify(c *clusterCLI, r *cluster.VerifyResult) {
	rs := r.RegionSize
	fmt.Fprintf(c.out, "LUN %d of %s: owner %s, epoch %d, regions of %s\n", r.LUN, r.Target, r.Owner, r.Epoch, agent.FormatBytes(rs))
	for _, cp := range r.Copies {
		switch {
		case cp.Error != "":
			fmt.Fprintf(c.out, "  %s: not compared after %d regions: %s\n", cp.Node, cp.Regions, cp.Error)
		case len(cp.Divergent) == 0:
			fmt.Fprintf(c.out, "  %s: %d regions compared, identical\n", cp.Node, cp.Regions)
		case r.Repair:
			fmt.Fprintf(c.out, "  %s: %d regions compared, %d differed and were rewritten\n", cp.Node, cp.Regions, len(cp.Divergent))
		default:
			fmt.Fprintf(c.out, "  %s: %d regions compared, %d differ\n", cp.Node, cp.Regions, len(cp.Divergent))
		}
		what := "differ"
		if r.Repair {
			what = "differed, rewritten"
		}
		for _, reg := range cp.Divergent {
			fmt.Fprintf(c.out, "    %s region %d: bytes %d-%d %s\n", cp.Node, reg, reg*rs, (reg+1)*rs-1, what)
		}
	}
}
