package cluster

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hatgt/hatgt/replication"
)

// Owner leases (invariant 5: no split brain).
//
// A node may serve a LUN as its owner only while it holds the owner lease:
// for Config.OwnerLease after its last contact with a Raft leader (a
// follower), or after the start of its last successful leadership check
// (raft's VerifyLeader: a quorum still follows it) when it leads. The lease
// is read on the node's own clock (Deps.Clock, monotonic) on every IO of a
// replicated LUN (Lease, LeaseValid), not only by a poller: a node that
// wakes from a stall (SIGSTOP, a paused VM, a stuck CPU) finds its lease
// ended before it serves a command that was queued meanwhile.
//
// A lease that ends is never extended: the next contact starts a new lease
// with a new generation, and whatever was opened under the old generation
// (owner volumes) must not serve again (the node claims a new epoch through
// Raft before it serves the LUN again, which fails if the LUN moved). This
// matters because contact can resume before anything reads the lease: a
// node woken from a stall may process a heartbeat of the new term at once,
// and would otherwise look as if it had never lost its lease.
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
//     and every IO it serves after that is refused (the lease is checked
//     on the IO path, before a write and after a read). The remaining
//     OwnerLease/2 covers clocks that run at slightly different rates.
//   - A leader-owner's lease starts before a leadership check that a quorum
//     answered; the followers of that quorum elect no one else until an
//     election timeout after that answer, and the new leader then waits
//     FailoverDelay again.
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
// Leave and removal follow the same argument. node.remove gives an owned
// LUN to another copy at once (the FSM reads no clock), so the leader lets
// it reach the log only when the owner no longer serves. A dead owner
// (OpRemove) is removed only once this leader has seen it out of reach,
// by the test and on the clock above, for FailoverDelay: its lease has
// run out by then (remove.go). A leaving owner (Leave) needs no wait,
// because it gives its lease up itself: it stops serving its LUNs first
// (Config.Release returns once no IO of them is served any more) and only
// then proposes each owner change; the leader refuses its removal while
// it still owns a LUN it could hand over (leave.go).
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
	clock replication.Clock
	d     time.Duration

	mu       sync.Mutex
	deadline time.Time // end of the current lease; zero: none
	gen      uint64    // bumped when a lease ends without renewal
	lapses   uint64
	snap     atomic.Pointer[leaseSnap] // deadline and gen, for LeaseValid
}

type leaseSnap struct {
	deadline time.Time
	gen      uint64
}

func newLease(clock replication.Clock, d time.Duration) *lease {
	l := &lease{clock: clock, d: d, gen: 1}
	l.snap.Store(&leaseSnap{gen: 1})
	return l
}

// observeLocked ends the lease if it ran out by now.
func (l *lease) observeLocked(now time.Time) {
	if !l.deadline.IsZero() && !now.Before(l.deadline) {
		l.deadline = time.Time{}
		l.gen++
		l.lapses++
		l.snap.Store(&leaseSnap{gen: l.gen})
	}
}

// renew extends the lease to from+d, from being the start of a contact
// with a leader (or of a successful leadership check). A lease that ran out
// is ended first: the contact then starts a new one (a new generation).
func (l *lease) renew(from time.Time) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observeLocked(now)
	if from.After(now) {
		from = now
	}
	if d := from.Add(l.d); d.After(now) && d.After(l.deadline) {
		l.deadline = d
		l.snap.Store(&leaseSnap{deadline: d, gen: l.gen})
	}
}

// current returns the lease generation and whether a lease is held now.
func (l *lease) current() (uint64, bool) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observeLocked(now)
	return l.gen, !l.deadline.IsZero()
}

// valid reports whether lease generation gen is still held now: the check
// on every IO (one atomic load and a clock read while it holds).
func (l *lease) valid(gen uint64) bool {
	s := l.snap.Load()
	if s.gen != gen {
		return false
	}
	if l.clock.Now().Before(s.deadline) {
		return true
	}
	l.current() // records the end of the lease
	return false
}

// refreshFollowerContact renews the lease from Raft's last contact with a
// leader, while this node is a follower that knows its leader.
func (n *Node) refreshFollowerContact() {
	if n.raft.State() != raft.Follower {
		return
	}
	if _, id := n.raft.LeaderWithID(); id == "" {
		return
	}
	if c := n.raft.LastContact(); !c.IsZero() {
		n.lease.renew(c)
	}
}

// leaseLoop renews the lease every OwnerLease/4 on the node's clock: from
// the last contact on a follower, by a leadership check on the leader.
func (n *Node) leaseLoop(ctx context.Context) {
	defer n.wg.Done()
	for {
		switch n.raft.State() {
		case raft.Leader:
			start := n.clock.Now()
			if n.raft.VerifyLeader().Error() == nil {
				n.lease.renew(start)
			}
		default:
			n.refreshFollowerContact()
		}
		wake := make(chan struct{})
		t := n.clock.AfterFunc(max(n.cfg.OwnerLease/4, time.Millisecond), func() { close(wake) })
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
		case <-n.leaseKick: // became leader: check at once
			t.Stop()
		}
	}
}

// HoldsLease reports whether this node may serve LUNs as their owner now.
// A node that gets false must stop serving as an owner at once; the leader
// may give its LUNs to another node FailoverDelay after it saw the node
// cut off.
func (n *Node) HoldsLease() bool {
	_, ok := n.Lease()
	return ok
}

// Lease returns the generation of this node's owner lease and whether it
// holds one now. An owner volume opened under generation g may serve only
// while LeaseValid(g).
func (n *Node) Lease() (gen uint64, ok bool) {
	n.refreshFollowerContact()
	return n.lease.current()
}

// LeaseValid reports whether lease generation gen is still held: false
// once that lease ended, even if the node holds a newer one since. It is
// cheap enough for every IO.
func (n *Node) LeaseValid(gen uint64) bool { return n.lease.valid(gen) }

// LeaseLapses counts the leases of this node that ended without renewal.
func (n *Node) LeaseLapses() uint64 {
	n.lease.mu.Lock()
	defer n.lease.mu.Unlock()
	return n.lease.lapses
}

// OwnerLease returns how long an owner keeps its lease after its last
// contact with a leader (Config.OwnerLease).
func (n *Node) OwnerLease() time.Duration { return n.cfg.OwnerLease }

// FailoverDelay returns how long the leader waits, after it saw an owner
// cut off, before it moves the owner's LUNs (Config.FailoverDelay).
func (n *Node) FailoverDelay() time.Duration { return n.cfg.FailoverDelay() }
