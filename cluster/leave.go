package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// OwnerRelease is the serving side of a node (the agent) as a leave needs
// it: the cluster package stops the node's owner volumes through it, never
// directly. Config.Release nil means nothing on this node serves LUNs (a
// control-plane-only node, tests).
type OwnerRelease interface {
	// StopServing makes this node stop serving the LUNs with the given
	// IDs as their owner, at once, and keeps it from serving them again
	// (from opening them in a new epoch, too) until ResumeServing. It
	// returns once no IO on them will be served here any more: what was
	// in flight has finished or failed. An error (ctx ended first) means
	// that cannot be promised, and the leave fails. LUNs this node does
	// not serve through an owner volume (no replication) are left alone:
	// a leave moves only LUNs that have another in-sync copy, and the node
	// stops serving the others when it shuts down after the leave.
	StopServing(ctx context.Context, ids []uint64) error
	// ResumeServing lifts StopServing (a leave that failed): the node
	// may serve those LUNs again, as their owner, in a new epoch.
	ResumeServing(ids []uint64)
}

// LeaveOptions are the options of a leave (POST /v1/leave's body).
type LeaveOptions struct {
	// Force lets the node leave although it owns LUNs with no other
	// in-sync copy on an alive node: they are left without an owner (or
	// with an in-sync copy on a dead node, which the failover loop moves
	// on), their data on this node only. Without it such a LUN makes the
	// leave fail, and nothing changes.
	Force bool `json:"force,omitempty"`
}

// leaveAttempts bounds how often a leave hands LUNs over and asks again
// when the leader refuses it for a LUN that came to this node meanwhile.
const leaveAttempts = 3

// Leave removes this node from the cluster gracefully, then shuts it down.
//
// First it hands its LUNs over (invariant 5: never two owners serving at
// once): it checks that each LUN it owns has another in-sync copy on an
// alive node (else it fails, naming the LUN, unless opts.Force); stops
// serving every LUN it owns (Config.Release.StopServing: no IO is served
// here after that); then proposes each LUN's owner change to the first
// such copy, a compare-and-set on the epoch like a failover, and waits for
// each commit. Only then it leaves the Raft configuration and the state
// (the leader refuses a node that still owns a LUN it could hand over),
// and memberlist. If a step fails, the node serves its LUNs again (in a
// new epoch) and stays a member.
func (n *Node) Leave(ctx context.Context, opts LeaveOptions) error {
	if n.IsLeader() && len(n.voters()) > 1 {
		// Hand leadership over first, so that the removal is committed by
		// a leader that stays.
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer before leave", "error", err)
		}
	}
	if len(n.voters()) > 1 {
		// Decide on the whole state: a LUN created here a moment ago
		// (committed, not applied here yet) must count.
		if err := n.CatchUp(ctx); errors.Is(err, ErrBadCommand) {
			n.log.Warn("the leader cannot say what it committed (an older version): leaving on this node's state", "error", err)
		} else if err != nil {
			return fmt.Errorf("cluster: leave: catching up with the leader: %w", err)
		}
		if err := n.leaveRaft(ctx, opts.Force); err != nil {
			return err
		}
	}
	if err := n.ml.Leave(2 * n.cfg.GossipProbeInterval); err != nil {
		n.log.Warn("gossip leave", "error", err)
	}
	time.Sleep(n.cfg.GossipProbeInterval / 2) // let the leave message spread
	return n.Shutdown()
}

// leaveRaft hands this node's LUNs over, then has the leader remove it.
func (n *Node) leaveRaft(ctx context.Context, force bool) error {
	var stopped []uint64
	resume := func() {
		if n.cfg.Release != nil && len(stopped) > 0 {
			n.log.Info("leave failed: serving the LUNs owned here again", "luns", len(stopped))
			n.cfg.Release.ResumeServing(stopped)
		}
	}
	for attempt := 1; ; attempt++ {
		ids, err := n.handOver(ctx, force)
		stopped = append(stopped, ids...)
		if err != nil {
			resume()
			return err
		}
		_, err = n.submit(ctx, &Op{Kind: OpLeave, NodeID: n.cfg.NodeID, Force: force})
		if err == nil {
			return nil
		}
		// Refused for a LUN that came to this node meanwhile: hand it
		// over too (once this node applied its creation), and ask again.
		if attempt < leaveAttempts && errors.Is(err, ErrInvalid) {
			n.log.Info("leave refused, handing over again", "error", err)
			time.Sleep(n.cfg.CommitTimeout + 100*time.Millisecond)
			continue
		}
		resume()
		return err
	}
}

// handOver stops serving every LUN this node owns and gives each one that
// has another in-sync copy on an alive node to that copy; see Leave. It
// returns the IDs it stopped serving, also on error.
func (n *Node) handOver(ctx context.Context, force bool) ([]uint64, error) {
	self := n.cfg.NodeID
	st := n.fsm.State()
	owned := lunsOwnedBy(st, self)
	if len(owned) == 0 {
		return nil, nil
	}
	var alone []*LUN
	ids := make([]uint64, 0, len(owned))
	for _, l := range owned {
		if handoverTarget(st, l, self) == "" {
			alone = append(alone, l)
		}
		ids = append(ids, l.ID)
	}
	if len(alone) > 0 && !force {
		return nil, errf(ErrInvalid, "cannot leave: this node owns %s with no other in-sync copy on an alive node: %s", lunNames(alone), leaveAloneAdvice)
	}
	if n.cfg.Release != nil {
		sctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
		err := n.cfg.Release.StopServing(sctx, ids)
		cancel()
		if err != nil {
			return ids, fmt.Errorf("cluster: leave: stop serving the LUNs owned here: %w", err)
		}
	}
	n.log.Info("stopped serving the LUNs owned here, handing them over", "luns", len(ids), "without_copy", len(alone))
	for _, l := range owned {
		if err := n.handOverLUN(ctx, l); err != nil {
			return ids, err
		}
	}
	return ids, nil
}

// handOverLUN proposes l's owner change to its first in-sync copy on an
// alive node and waits for the commit. A proposal refused because the LUN
// changed meanwhile (its epoch, its in-sync set) is made again on the new
// state; a LUN no longer owned here, or gone, is done. A LUN without such
// a copy (a forced leave) stays as it is.
func (n *Node) handOverLUN(ctx context.Context, l *LUN) error {
	self := n.cfg.NodeID
	for try := 0; ; try++ {
		to := handoverTarget(n.fsm.State(), l, self)
		if to == "" {
			return nil // forced: node.remove leaves it without an owner
		}
		cmd, err := NewCommand(CmdLUNSetOwner, LUNSetOwner{IQN: l.Target, LUN: l.LUN, Owner: to, Epoch: l.Epoch})
		if err != nil {
			return err
		}
		_, err = n.submit(ctx, &Op{Kind: OpCommand, Command: &cmd})
		if err == nil {
			n.log.Info("LUN handed over", "target", l.Target, "lun", l.LUN, "to", to, "epoch", l.Epoch+1)
			return nil
		}
		if errors.Is(err, ErrUnknownLUN) || errors.Is(err, ErrUnknownTarget) {
			return nil // deleted meanwhile
		}
		if try >= leaveAttempts || !(errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrInvalid)) {
			return fmt.Errorf("cluster: leave: hand LUN %d of %s over to %s: %w", l.LUN, l.Target, to, err)
		}
		// The LUN changed: look again at the state this node applied
		// (the leader's is at least as new, so wait a commit for it).
		time.Sleep(n.cfg.CommitTimeout + 50*time.Millisecond)
		t := n.fsm.State().Targets[l.Target]
		if t == nil || t.LUNs[l.LUN] == nil || t.LUNs[l.LUN].ID != l.ID {
			return nil
		}
		if l = t.LUNs[l.LUN]; l.Owner != self {
			return nil
		}
	}
}
