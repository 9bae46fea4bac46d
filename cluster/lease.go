package cluster

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Owner leases (invariant 5: no split brain).
//
// A node may serve a LUN as its owner only while it holds the owner lease:
// while it is the Raft leader, or for Config.OwnerLease after its last
// contact with a Raft leader. The serve command polls HoldsLease several
// times per lease and deposes every volume it owns as soon as it returns
// false; past that point the node serves nothing as an owner.
//
// The leader moves the LUNs of an owner only after it has seen, itself and
// without a break, that the owner is recorded dead (or left) and that its
// own Raft heartbeats to it fail (or it is no Raft server at all), and
// Config.FailoverDelay = OwnerLease + OwnerLease/2 + ElectionTimeout has
// passed since t0: the moment this leader first saw those heartbeats
// fail, when they fail without a break since (else the moment it saw the
// owner gone). The clock is this leader's own (monotonic): a new leader
// starts it again and no time is ever read from the log, since clocks of
// different nodes do not compare. Why that wait is enough:
//
//   - The owner's lease runs from its last contact with a leader. At t0
//     the current leader's heartbeats to the owner already fail, so the
//     owner's last contact with this leader is before t0 (a follower
//     refreshes its contact only on an AppendEntries that it accepts, and
//     a failed one was not).
//   - A leader of an older term can have been in contact with the owner
//     after t0 only while it still believed it led. It steps down once it
//     has missed a quorum for LeaderLeaseTimeout, or at the first answer
//     carrying the newer term; a quorum had moved to the newer term before
//     this leader was elected, which was before t0. So that contact ends
//     within about LeaderLeaseTimeout <= HeartbeatTimeout <= ElectionTimeout
//     after t0.
//   - Hence the owner's lease ends before t0 + ElectionTimeout + OwnerLease,
//     and it has deposed its volumes one lease check later. The remaining
//     OwnerLease/2 covers that check (the serve command checks every 250ms;
//     the default lease is 1s) and clocks that run at slightly different
//     rates.
//
// Memberlist alone is not trusted for this: in a partial partition gossip
// can call a node dead while Raft still reaches it (and renews its lease),
// which is why the leader also needs its own heartbeats to the owner to
// fail. (In a one-way cut, where the owner still receives the leader's
// AppendEntries but its answers are lost, the owner keeps its lease; the
// same AppendEntries then bring it the ownership change, and its mirrors
// refuse its old epoch: invariant 2.) A Raft-only cut that gossip does not
// see leaves the owner without a lease and its LUNs unserved until the cut
// heals: the leader does not act on failed heartbeats alone, because a
// lost ResumedHeartbeat observation could leave them looking failed for a
// healthy owner.
//
// Without a quorum the leader steps down and commits nothing, so no owner
// changes at all (the FSM also checks the epoch and that the new owner is
// in sync: invariant 4).
//
// HoldsLease refines "a follower whose last contact is recent" in two
// ways. Contact counts only while the node is a follower that knows its
// leader: Raft also refreshes its contact time when it grants a vote, and
// a vote for a candidate that never wins is no contact with a leader.
// And the contact is remembered across an election: a follower whose
// leader died becomes a candidate within a heartbeat timeout, but keeps
// serving until its lease runs out, so a change of Raft leader alone does
// not make every owner stop.
type lease struct {
	mu   sync.Mutex
	from time.Time // start of the current lease; zero: never held
}

// HoldsLease reports whether this node may serve LUNs as their owner: it
// is the Raft leader, or its last contact with a leader is within
// OwnerLease. A node that gets false must stop serving as an owner at
// once; the leader may give its LUNs to another node FailoverDelay after
// it saw the node cut off.
func (n *Node) HoldsLease() bool {
	now := time.Now()
	n.lease.mu.Lock()
	defer n.lease.mu.Unlock()
	switch n.raft.State() {
	case raft.Leader:
		n.lease.from = now
		return true
	case raft.Follower:
		if _, id := n.raft.LeaderWithID(); id != "" {
			if c := n.raft.LastContact(); c.After(n.lease.from) && !c.After(now) {
				n.lease.from = c
			}
		}
	}
	return !n.lease.from.IsZero() && now.Sub(n.lease.from) <= n.cfg.OwnerLease
}

// OwnerLease returns how long an owner keeps its lease after its last
// contact with a leader (Config.OwnerLease).
func (n *Node) OwnerLease() time.Duration { return n.cfg.OwnerLease }

// FailoverDelay returns how long the leader waits, after it saw an owner
// cut off, before it moves the owner's LUNs (Config.FailoverDelay).
func (n *Node) FailoverDelay() time.Duration { return n.cfg.FailoverDelay() }
