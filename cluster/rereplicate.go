package cluster

import (
	"context"
	"slices"
	"sort"
)

// rereplicatePass, run by the leader with the failover loop, gives every
// LUN that has an owner but fewer copies than its replicas (a node holding
// one was removed) a new copy on an alive node without one: the node with
// the fewest copies, ties broken by ID. The copy starts out of sync; the
// owner's volume sees it in the view and gives it a full copy, after which
// it joins the in-sync set. One proposal per LUN per pass.
func (n *Node) rereplicatePass(ctx context.Context) {
	if !n.IsLeader() {
		return
	}
	st := n.fsm.State()
	count := st.copiesPerNode()
	for _, t := range st.SortedTargets() {
		for _, l := range t.SortedLUNs() {
			if l.Owner == "" || len(l.Placement) >= l.Replicas {
				continue
			}
			to := pickNewCopy(st, l, count)
			if to == "" {
				continue
			}
			cmd, _ := NewCommand(CmdLUNAddCopy, LUNAddCopy{IQN: t.IQN, LUN: l.LUN, ID: l.ID, Epoch: l.Epoch, Node: to})
			if _, err := n.execute(ctx, &Op{Kind: OpCommand, Command: &cmd}); err != nil {
				n.log.Debug("new copy proposal", "target", t.IQN, "lun", l.LUN, "node", to, "error", err)
				continue
			}
			count[to]++
			n.log.Info("placing a new copy", "target", t.IQN, "lun", l.LUN, "node", to,
				"copies", len(l.Placement)+1, "replicas", l.Replicas)
		}
	}
}

// pickNewCopy returns the alive node without a copy of l that holds the
// fewest copies (then the smallest ID), or "".
func pickNewCopy(st *State, l *LUN, count map[string]int) string {
	var cands []string
	for id, ni := range st.Nodes {
		if ni.Health == HealthAlive && !slices.Contains(l.Placement, id) {
			cands = append(cands, id)
		}
	}
	if len(cands) == 0 {
		return ""
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if count[a] != count[b] {
			return count[a] < count[b]
		}
		return a < b
	})
	return cands[0]
}
