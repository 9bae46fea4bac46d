package cluster

import (
	"context"
	"fmt"
)

// setAppliedLocked records idx as applied (it never goes back) and wakes
// every WaitApplied. f.mu is held for writing.
func (f *FSM) setAppliedLocked(idx uint64) {
	if idx <= f.applied && f.appliedCh != nil {
		return
	}
	f.applied = max(f.applied, idx)
	if f.appliedCh != nil {
		close(f.appliedCh)
	}
	f.appliedCh = make(chan struct{})
}

// noteRestored records that the state now holds every entry up to idx
// (the index of the snapshot Raft just restored): Restore itself is not
// told the index.
func (f *FSM) noteRestored(idx uint64) {
	f.mu.Lock()
	f.setAppliedLocked(idx)
	f.mu.Unlock()
}

// WaitApplied returns once this state machine has applied the entry at
// idx (or a snapshot past it), or with ctx's error when ctx ends first.
func (f *FSM) WaitApplied(ctx context.Context, idx uint64) error {
	for {
		f.mu.Lock()
		if f.applied >= idx {
			f.mu.Unlock()
			return nil
		}
		if f.appliedCh == nil {
			f.appliedCh = make(chan struct{})
		}
		ch := f.appliedCh
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("entry %d not applied here yet: %w", idx, ctx.Err())
		}
	}
}

// waitForwarded is the read-your-writes step of a change that a follower
// forwarded to the leader: it returns once this node applied the entry
// at idx, so that a read through this node right after the change sees
// it (consul's default consistency for its writes). ctx bounds the wait
// (the request's timeout); past it the change stands, committed, and
// only a warning says this node lags.
func (n *Node) waitForwarded(ctx context.Context, idx uint64) {
	if idx == 0 {
		return
	}
	if err := n.fsm.WaitApplied(ctx, idx); err != nil {
		n.log.Warn("change committed by the leader but not applied on this node within the request's timeout: a read through this node may not show it yet",
			"index", idx, "applied", n.fsm.AppliedIndex(), "error", err)
	}
}

// latestSnapshotIndex returns the index of the newest snapshot in the
// node's snapshot store (0 without one).
func (n *Node) latestSnapshotIndex() uint64 {
	if n.deps.SnapshotStore == nil {
		return 0
	}
	metas, err := n.deps.SnapshotStore.List()
	if err != nil || len(metas) == 0 {
		return 0
	}
	return metas[0].Index
}

// CatchUp returns once this node has applied everything the leader had
// committed when it was asked: a decision taken on this node's state
// after it (a leave's handover) sees every change made before, through
// any node.
func (n *Node) CatchUp(ctx context.Context) error {
	idx, err := n.submit(ctx, &Op{Kind: OpBarrier})
	if err != nil {
		return err
	}
	return n.fsm.WaitApplied(ctx, idx)
}
