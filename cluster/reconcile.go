package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// Reconciler keeps a node's running iSCSI targets and LUNs equal to what the
// state machine says. The node calls it from one goroutine (never
// concurrently) after every state change and every Config.ReconcileInterval;
// an error is logged and the call retried later. Reconcile must be
// idempotent: it gets the whole desired state each time, not a diff.
type Reconciler interface {
	Reconcile(ctx context.Context, desired *Desired) error
}

// ReconcilerFunc adapts a function to Reconciler.
type ReconcilerFunc func(ctx context.Context, desired *Desired) error

// Reconcile calls f.
func (f ReconcilerFunc) Reconcile(ctx context.Context, d *Desired) error { return f(ctx, d) }

// Desired is what one node must run.
type Desired struct {
	NodeID string
	// Index is the Raft index of the state this was derived from.
	Index uint64
	// Targets holds every target of the cluster (each node is a target port
	// group of every target), with its ACL and CHAP credentials (secrets
	// included: the node needs them to authenticate initiators), and only
	// the LUNs that have a copy on this node. Sorted by IQN.
	Targets []DesiredTarget
}

// DesiredTarget is a target as one node must run it.
type DesiredTarget struct {
	IQN   string
	Alias string
	ACL   []string
	CHAP  *CHAP
	LUNs  []DesiredLUN // sorted by LUN number
}

// DesiredLUN is a LUN with a copy on this node. Owned tells whether this
// node serves it (Active/Optimized); otherwise it holds a mirror. The node
// creates the backing file of every LUN here and stops what is not here.
type DesiredLUN struct {
	LUN
	Owned bool
	// BackingPath is LUN.Path, or for a fileio LUN without one,
	// DefaultBackingPath under the node's data dir.
	BackingPath string
}

// DefaultBackingPath is where a fileio LUN without a path keeps its data:
// DATA/luns/IQN/lunN.img.
func DefaultBackingPath(dataDir, iqn string, lun, id uint64) string {
	name := fmt.Sprintf("lun%d.img", lun)
	if id != 0 {
		// The cluster-wide LUN ID keeps a deleted LUN's file (never
		// removed automatically) from being served as a new LUN.
		name = fmt.Sprintf("lun%d-%d.img", lun, id)
	}
	return filepath.Join(dataDir, "luns", iqn, name)
}

// DesiredFor derives node id's desired state from s; dataDir is the node's
// data dir (for default backing paths).
func DesiredFor(s *State, id, dataDir string, index uint64) *Desired {
	d := &Desired{NodeID: id, Index: index}
	for _, t := range s.SortedTargets() {
		dt := DesiredTarget{IQN: t.IQN, Alias: t.Alias, ACL: slices.Clone(t.ACL)}
		if t.CHAP != nil {
			c := *t.CHAP
			dt.CHAP = &c
		}
		for _, l := range t.SortedLUNs() {
			if slices.Contains(l.Placement, id) {
				dt.LUNs = append(dt.LUNs, DesiredLUNFor(l, id, dataDir))
			}
		}
		d.Targets = append(d.Targets, dt)
	}
	return d
}

// DesiredLUNFor is LUN l as node id, whose data dir is dataDir, must hold
// it.
func DesiredLUNFor(l *LUN, id, dataDir string) DesiredLUN {
	p := l.Path
	if p == "" {
		p = DefaultBackingPath(dataDir, l.Target, l.LUN, l.ID)
	}
	return DesiredLUN{LUN: *l.clone(), Owned: l.Owner == id, BackingPath: p}
}

// reconcileLoop calls r after every FSM change and every interval until ctx
// ends.
func (n *Node) reconcileLoop(ctx context.Context, r Reconciler) {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.ReconcileInterval)
	defer tick.Stop()
	var last uint64
	failed := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.fsm.Changed():
		case <-tick.C:
			if !failed && n.fsm.AppliedIndex() == last {
				continue
			}
		}
		idx := n.fsm.AppliedIndex()
		d := DesiredFor(n.fsm.State(), n.cfg.NodeID, n.cfg.DataDir, idx)
		if err := r.Reconcile(ctx, d); err != nil {
			failed = true
			n.log.Warn("reconcile failed", "index", idx, "error", err)
			continue
		}
		failed = false
		last = idx
	}
}
