package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Automatic ownership failover, run by the leader.
//
// For every LUN whose owner is gone — recorded dead or left (or not a
// member), and no longer reached by this leader's Raft heartbeats — or
// that has no owner at all, the leader waits until it has seen that
// without a break for Config.FailoverDelay, then proposes lun.set_owner to
// the first node of the placement that is in the in-sync set and recorded
// alive, at the LUN's current epoch. The FSM checks the epoch (compare and
// set) and that the new owner is in sync (invariant 4), and bumps the
// epoch. lease.go explains why the wait keeps two owners from serving at
// once (invariant 5). The loop is level triggered: it runs after every
// state change, on a change of leadership or heartbeat health, and on a
// tick, so a missed event only delays it.

// lunKey names one LUN; ID tells apart a LUN deleted and created again.
type lunKey struct {
	iqn string
	lun uint64
	id  uint64
}

// cutOff is what the leader saw of one LUN's owner: since when it has been
// gone without a break (this leader's clock), and whether the stuck
// warning was logged.
type cutOff struct {
	owner  string
	epoch  uint64
	since  time.Time
	warned bool
}

// failover is the leader-local bookkeeping of the failover loop; only the
// loop's goroutine touches it.
type failover struct {
	term uint64 // the Raft term the clocks were started in
	seen map[lunKey]*cutOff
}

func (f *failover) reset(term uint64) {
	f.term = term
	clear(f.seen)
}

// reachClock is the failover loop's view of every node, kept for the
// removal of a node that owns LUNs (remove.go): since when, on this
// leader's clock, the node has been out of reach without a break (the
// same test and the same clock as a LUN's owner: nodeGone, cutSince).
// It is empty on a follower and starts again with every term.
type reachClock struct {
	mu    sync.Mutex
	since map[string]time.Time
}

func (r *reachClock) reset() {
	r.mu.Lock()
	r.since = nil
	r.mu.Unlock()
}

// get returns since when node id has been out of reach, if it is.
func (r *reachClock) get(id string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.since[id]
	return t, ok
}

// kickFailover wakes the failover loop (without blocking, coalesced).
func (n *Node) kickFailover() {
	select {
	case n.foKick <- struct{}{}:
	default:
	}
}

// failoverLoop runs on every node and acts only while it leads.
func (n *Node) failoverLoop(ctx context.Context) {
	defer n.wg.Done()
	tick := time.NewTicker(max(n.cfg.OwnerLease/4, time.Millisecond))
	defer tick.Stop()
	f := &failover{seen: map[lunKey]*cutOff{}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.foKick:
		case <-tick.C:
		}
		n.failoverPass(ctx, f)
		n.rereplicatePass(ctx)
	}
}

// failoverPass checks every LUN once and proposes the owner changes that
// are due.
func (n *Node) failoverPass(ctx context.Context, f *failover) {
	if !n.IsLeader() {
		f.reset(0)
		n.reach.reset()
		return
	}
	// A leader that lost and won leadership again between two passes
	// starts every clock again, like any new leader.
	if term := n.raft.CurrentTerm(); term != f.term {
		f.reset(term)
		n.reach.reset()
	}
	servers, ok := n.raftServers()
	if !ok {
		return // without the configuration no owner can be judged out of reach
	}
	st := n.fsm.State()
	n.mu.Lock()
	failed := make(map[string]bool, len(n.hbFailed))
	contact := make(map[string]time.Time, len(n.hbFailed))
	for id, t := range n.hbFailed {
		failed[id] = true
		contact[id] = t
	}
	n.mu.Unlock()
	now := time.Now()
	delay := n.cfg.FailoverDelay()
	n.trackReach(st, servers, failed, contact, now)

	live := map[lunKey]bool{}
	for _, t := range st.SortedTargets() {
		for _, l := range t.SortedLUNs() {
			why := n.ownerGone(st, l, servers, failed)
			if why == "" {
				continue
			}
			k := lunKey{iqn: t.IQN, lun: l.LUN, id: l.ID}
			live[k] = true
			c := f.seen[k]
			if c == nil || c.owner != l.Owner || c.epoch != l.Epoch {
				c = &cutOff{owner: l.Owner, epoch: l.Epoch, since: cutSince(now, contact, l.Owner)}
				f.seen[k] = c
				n.log.Info("LUN owner gone: failover pending", "target", t.IQN, "lun", l.LUN,
					"owner", l.Owner, "reason", why, "after", max(delay-now.Sub(c.since), 0).Round(time.Millisecond))
			}
			if now.Sub(c.since) < delay {
				continue
			}
			to, stuck := pickOwner(st, l, n.cfg.NodeID, failed)
			if to == "" {
				if !c.warned {
					c.warned = true
					n.log.Warn("LUN stuck without a serving owner", "target", t.IQN, "lun", l.LUN,
						"owner", l.Owner, "reason", why, "stuck", stuck)
				}
				continue
			}
			if err := n.moveOwner(ctx, l, to); err != nil {
				n.log.Debug("failover proposal", "target", t.IQN, "lun", l.LUN, "to", to, "error", err)
				continue
			}
			delete(f.seen, k)
			n.log.Info("LUN owner moved", "target", t.IQN, "lun", l.LUN, "from", l.Owner, "to", to,
				"epoch", l.Epoch+1, "reason", why)
		}
	}
	for k := range f.seen {
		if !live[k] {
			delete(f.seen, k)
		}
	}
}

// cutSince is when the failover clock of a LUN whose owner is found gone
// at now starts: when this leader first saw its heartbeats to the owner
// fail, if they fail since then, else now. Gossip takes seconds to call a
// node dead, and the owner's lease runs out meanwhile (lease.go): the wait
// need not start again from the gossip verdict.
func cutSince(now time.Time, failing map[string]time.Time, owner string) time.Time {
	if t, ok := failing[owner]; ok && t.Before(now) {
		return t
	}
	return now
}

// ownerGone says why l needs a new owner, or "" when its owner may still
// be serving (nodeGone).
func (n *Node) ownerGone(st *State, l *LUN, servers, failed map[string]bool) string {
	if l.Owner == "" {
		return "no owner"
	}
	if why := n.nodeGone(st, l.Owner, servers, failed); why != "" {
		return "owner " + why
	}
	return ""
}

// nodeGone says why node id is out of reach, or "" when it may still be
// serving as an owner. A node counts as out of reach only when it is
// recorded dead or left (or is no member) and this leader's Raft
// heartbeats do not reach it (or it is no Raft server): gossip alone can
// be wrong in a partial partition, and a node that Raft reaches keeps
// renewing its lease.
func (n *Node) nodeGone(st *State, id string, servers, failed map[string]bool) string {
	switch {
	case id == n.cfg.NodeID:
		return "" // the leader itself: alive and holding its lease
	case servers[id] && !failed[id]:
		return "" // Raft still reaches it
	}
	ni, ok := st.Nodes[id]
	switch {
	case !ok:
		return "is not a member"
	case ni.Health == HealthDead:
		return "recorded dead"
	case ni.Health == HealthLeft:
		return "recorded left"
	}
	return ""
}

// trackReach updates the reach clock with one pass's view: a node out of
// reach keeps the time it was first seen so (or, when this leader's
// heartbeats to it fail since earlier, that time); any other node is
// dropped, so that a break starts its clock again.
func (n *Node) trackReach(st *State, servers, failed map[string]bool, contact map[string]time.Time, now time.Time) {
	ids := map[string]bool{}
	for id := range st.Nodes {
		ids[id] = true
	}
	for id := range servers {
		ids[id] = true
	}
	n.reach.mu.Lock()
	defer n.reach.mu.Unlock()
	next := make(map[string]time.Time)
	for id := range ids {
		if n.nodeGone(st, id, servers, failed) == "" {
			continue
		}
		if t, ok := n.reach.since[id]; ok {
			next[id] = t
		} else {
			next[id] = cutSince(now, contact, id)
		}
	}
	n.reach.since = next
}

// pickOwner returns the first node of l's placement that is in sync,
// recorded alive and reached by Raft (self is); or "" and why none is.
func pickOwner(st *State, l *LUN, self string, failed map[string]bool) (string, string) {
	var why []string
	for _, id := range l.Placement {
		if id == l.Owner {
			continue
		}
		ni := st.Nodes[id]
		switch {
		case !slices.Contains(l.InSync, id):
			why = append(why, id+" not in sync")
		case ni == nil:
			why = append(why, id+" not a member")
		case ni.Health != HealthAlive:
			why = append(why, id+" "+ni.Health)
		case id != self && failed[id]:
			why = append(why, id+" unreachable by Raft")
		default:
			return id, ""
		}
	}
	if len(why) == 0 {
		return "", "no other copy"
	}
	return "", "no in-sync copy alive: " + strings.Join(why, ", ")
}

// moveOwner proposes l's new owner at l's current epoch.
func (n *Node) moveOwner(ctx context.Context, l *LUN, to string) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	cmd, err := NewCommand(CmdLUNSetOwner, LUNSetOwner{IQN: l.Target, LUN: l.LUN, Owner: to, Epoch: l.Epoch})
	if err != nil {
		return err
	}
	_, err = n.execute(ctx, &Op{Kind: OpCommand, Command: &cmd})
	if errors.Is(err, errRetry) {
		return fmt.Errorf("leadership lost")
	}
	return err
}

// raftServers returns the IDs of the servers of the current Raft
// configuration; false when Raft cannot say.
func (n *Node) raftServers() (map[string]bool, bool) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil, false
	}
	m := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		m[string(s.ID)] = true
	}
	return m, true
}

// notifyFSM is the FSM as Raft sees it: every apply and restore also wakes
// the failover loop (FSM.Changed has a single reader already).
type notifyFSM struct {
	*FSM
	n *Node
}

func (w notifyFSM) Apply(l *raft.Log) any {
	r := w.FSM.Apply(l)
	w.n.kickFailover()
	return r
}

func (w notifyFSM) Restore(rc io.ReadCloser) error {
	err := w.FSM.Restore(rc)
	if err == nil {
		w.FSM.noteRestored(w.n.latestSnapshotIndex())
	}
	w.n.kickFailover()
	return err
}
