package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Removing a node that owns LUNs (invariant 5).
//
// The state machine's node.remove gives each LUN the removed node owned
// to the first remaining in-sync copy at once (dropCopy): it cannot read
// a clock. So the leader lets no removal of an owner reach the log while
// that owner may still serve:
//
//   - "hatgt node remove" (OpRemove, a dead node): the leader waits until
//     it has seen the node out of reach (recorded dead or left, and its
//     Raft heartbeats failing or no Raft server at all) without a break
//     for Config.FailoverDelay, on its own clock: the clock of the
//     failover loop (reachClock), which lease.go shows is long enough for
//     the owner's lease to have run out. Then it moves the node's LUNs
//     through the failover path (the first in-sync copy recorded alive and
//     reached by Raft, compare-and-set on the epoch), and only then removes
//     the node. The call waits for that when the wait fits in its time
//     (Config.ApplyTimeout, of which half is kept for the commits); else
//     it answers ErrOwnerLease at once, saying when to retry ("hatgt node
//     remove" retries by itself until its --timeout).
//   - "hatgt leave" (OpLeave): the leaving node hands its LUNs over before
//     it asks (leave.go); the leader refuses the leave of a node that
//     still owns a LUN with another in-sync copy on an alive node (one
//     created meanwhile: the leaving node hands it over and asks again),
//     and, unless forced, of a node that owns any LUN.

// beforeRemove runs on the leader before op (OpRemove or OpLeave) touches
// Raft: see above.
func (n *Node) beforeRemove(ctx context.Context, op *Op) error {
	if op.Kind == OpLeave {
		return checkLeaver(n.fsm.State(), op.NodeID, op.Force)
	}
	return n.awaitOwnerLease(ctx, op.NodeID)
}

// lunsOwnedBy returns the LUNs that node id owns, sorted by target and
// number.
func lunsOwnedBy(st *State, id string) []*LUN {
	var out []*LUN
	for _, t := range st.SortedTargets() {
		for _, l := range t.SortedLUNs() {
			if l.Owner == id {
				out = append(out, l)
			}
		}
	}
	return out
}

// handoverTarget returns the node a leaving owner gives l to: the first
// other node of l's placement that is in sync and recorded alive; "" when
// there is none.
func handoverTarget(st *State, l *LUN, self string) string {
	to, _ := pickOwner(st, l, self, nil)
	return to
}

// lunNames names a few LUNs for a message: "LUN 0 of iqn.x, LUN 1 of iqn.y
// and 3 more".
func lunNames(ls []*LUN) string {
	const most = 3
	var names []string
	for i, l := range ls {
		if i == most {
			names = append(names, fmt.Sprintf("and %d more", len(ls)-most))
			break
		}
		names = append(names, fmt.Sprintf("LUN %d of %s", l.LUN, l.Target))
	}
	return strings.Join(names, ", ")
}

// checkLeaver refuses the leave of node id while it owns a LUN that it
// could hand over (it must, before it leaves), or, unless force, any LUN.
func checkLeaver(st *State, id string, force bool) error {
	var alone []*LUN
	for _, l := range lunsOwnedBy(st, id) {
		if to := handoverTarget(st, l, id); to != "" {
			return errf(ErrInvalid, "node %s still owns LUN %d of %s, which has an in-sync copy on %s: a leaving node hands its LUNs over before it leaves (hatgt leave does); leave again",
				id, l.LUN, l.Target, to)
		}
		alone = append(alone, l)
	}
	if len(alone) > 0 && !force {
		return errf(ErrInvalid, "node %s owns %s with no other in-sync copy on an alive node: %s", id, lunNames(alone), leaveAloneAdvice)
	}
	return nil
}

// leaveAloneAdvice says what to do about a LUN that keeps a node from
// leaving.
const leaveAloneAdvice = "delete it (hatgt lun delete), or add copies and wait until they are in sync (hatgt status), then leave again; " +
	"or leave with --force, which leaves it without an owner, its data on this node only"

// awaitOwnerLease holds the removal of node id, while it owns LUNs, until
// this leader has seen it out of reach for FailoverDelay; then it moves
// the node's LUNs through the failover path. It answers ErrOwnerLease when
// the wait does not fit in ctx (half of Config.ApplyTimeout stays for the
// commits).
func (n *Node) awaitOwnerLease(ctx context.Context, id string) error {
	delay := n.cfg.FailoverDelay()
	poll := max(n.cfg.OwnerLease/4, 10*time.Millisecond)
	for {
		owned := lunsOwnedBy(n.fsm.State(), id)
		if len(owned) == 0 {
			return nil
		}
		if !n.IsLeader() {
			return errRetry
		}
		since, seen := n.reach.get(id)
		left := delay
		if seen {
			left = delay - time.Since(since)
		}
		if seen && left <= 0 {
			return n.moveOwnedOff(ctx, id)
		}
		if d, ok := ctx.Deadline(); ok && left > time.Until(d)-n.cfg.ApplyTimeout/2 {
			return n.ownerLeaseErr(id, owned, since, seen, left)
		}
		select {
		case <-ctx.Done():
			return n.ownerLeaseErr(id, owned, since, seen, left)
		case <-n.shutdownCh:
			return ErrShutdown
		case <-time.After(min(left, poll)):
		}
	}
}

// ownerLeaseErr is the answer to the removal of owner id before its lease
// surely ran out: when to retry, or why the leader cannot tell yet.
func (n *Node) ownerLeaseErr(id string, owned []*LUN, since time.Time, seen bool, left time.Duration) error {
	if seen {
		return errf(ErrOwnerLease, "node %s owns %s and may still serve it until its owner lease runs out: this leader saw it out of reach %v ago and moves its LUNs %v after that; retry in %v (hatgt node remove waits for it)",
			id, lunNames(owned), time.Since(since).Round(time.Millisecond), n.cfg.FailoverDelay(), left.Round(100*time.Millisecond))
	}
	why := "it is recorded alive"
	if ni := n.fsm.State().Nodes[id]; ni != nil && ni.Health != HealthAlive {
		why = "its Raft heartbeats still get through"
	}
	return errf(ErrOwnerLease, "node %s owns %s and this leader does not see it out of reach yet (%s): it may still serve it; make sure it is stopped, wait until the cluster records it dead (hatgt status), then retry",
		id, lunNames(owned), why)
}

// moveOwnedOff gives each LUN that node id (out of reach past its lease)
// owns to its first in-sync copy recorded alive and reached by Raft, as
// the failover loop would (a LUN it moved meanwhile is skipped). A LUN
// with no such copy stays with id; node.remove then gives it to its first
// remaining in-sync copy, or leaves it without an owner.
func (n *Node) moveOwnedOff(ctx context.Context, id string) error {
	n.mu.Lock()
	failed := make(map[string]bool, len(n.hbFailed))
	for f := range n.hbFailed {
		failed[f] = true
	}
	n.mu.Unlock()
	st := n.fsm.State()
	for _, l := range lunsOwnedBy(st, id) {
		to, why := pickOwner(st, l, n.cfg.NodeID, failed)
		if to == "" {
			n.log.Warn("removing the owner of a LUN with no in-sync copy alive", "node", id,
				"target", l.Target, "lun", l.LUN, "why", why)
			continue
		}
		cmd, err := NewCommand(CmdLUNSetOwner, LUNSetOwner{IQN: l.Target, LUN: l.LUN, Owner: to, Epoch: l.Epoch})
		if err != nil {
			return err
		}
		if _, err := n.applyRaft(ctx, cmd); err != nil {
			if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrUnknownLUN) || errors.Is(err, ErrUnknownTarget) {
				continue // moved (the failover loop) or deleted meanwhile
			}
			return err // errRetry included: the caller tries again
		}
		n.log.Info("LUN owner moved before the owner's removal", "target", l.Target, "lun", l.LUN,
			"from", id, "to", to, "epoch", l.Epoch+1)
	}
	return nil
}
