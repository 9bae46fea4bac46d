package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MemCoordinator is an in-memory Coordinator for tests: commits are
// immediate, or delayed by SetCommitDelay, or fail by FailNext, or have
// the fate SetProposalFault gives them. It keeps a
// log of events in commit order (Events) that a test can add its own
// events to (Record), to assert "committed before acknowledged" by
// sequence rather than by wall clock.
type MemCoordinator struct {
	mu       sync.Mutex
	views    map[LUNID]View
	watchers map[LUNID]map[int]chan View
	nextW    int
	delay    time.Duration
	gate     chan struct{}
	failNext []error
	fault    ProposalFault
	events   []string
	progress map[LUNID]map[NodeID]Progress
}

// NewMemCoordinator returns a coordinator with no LUN.
func NewMemCoordinator() *MemCoordinator {
	return &MemCoordinator{
		views:    map[LUNID]View{},
		watchers: map[LUNID]map[int]chan View{},
		progress: map[LUNID]map[NodeID]Progress{},
	}
}

// SetView commits v for lun as is (the test plays the Raft leader).
func (c *MemCoordinator) SetView(lun LUNID, v View) {
	c.mu.Lock()
	c.commitLocked(lun, v.Clone(), fmt.Sprintf("set lun=%d epoch=%d owner=%s insync=%v", lun, v.Epoch, v.Owner, v.InSync))
	c.mu.Unlock()
}

// NewEpoch makes owner the owner of lun in the next epoch and returns it.
func (c *MemCoordinator) NewEpoch(lun LUNID, owner NodeID) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.views[lun].Clone()
	v.Epoch++
	v.Owner = owner
	c.commitLocked(lun, v, fmt.Sprintf("epoch lun=%d epoch=%d owner=%s", lun, v.Epoch, owner))
	return v.Epoch
}

// SetCommitDelay delays every later commit by d.
func (c *MemCoordinator) SetCommitDelay(d time.Duration) {
	c.mu.Lock()
	c.delay = d
	c.mu.Unlock()
}

// HoldCommits makes proposals wait until ReleaseCommits (like a leader that
// cannot reach a quorum yet).
func (c *MemCoordinator) HoldCommits() {
	c.mu.Lock()
	if c.gate == nil {
		c.gate = make(chan struct{})
	}
	c.mu.Unlock()
}

// ReleaseCommits lets held proposals proceed.
func (c *MemCoordinator) ReleaseCommits() {
	c.mu.Lock()
	if c.gate != nil {
		close(c.gate)
		c.gate = nil
	}
	c.mu.Unlock()
}

// FailNext makes the next proposal fail with err (no quorum, say).
func (c *MemCoordinator) FailNext(err error) {
	c.mu.Lock()
	c.failNext = append(c.failNext, err)
	c.mu.Unlock()
}

// ProposalFault decides the fate of one proposal: op is "insync"
// (MarkInSync), "drop" (DropFromInSync) or "generations"
// (RecordGenerations, node empty). A non-nil before fails it
// without committing anything (like FailNext); a non-nil after commits it
// and then returns after, the outcome a proposer cannot tell from a
// failure (a timeout, or a leader lost after the entry was appended).
type ProposalFault func(op string, lun LUNID, node NodeID) (before, after error)

// SetProposalFault makes f decide the fate of every later proposal (nil:
// none). It is consulted when the proposal is made, before HoldCommits or
// SetCommitDelay hold it.
func (c *MemCoordinator) SetProposalFault(f ProposalFault) {
	c.mu.Lock()
	c.fault = f
	c.mu.Unlock()
}

// Record appends a test's own event to the log and returns its index.
func (c *MemCoordinator) Record(event string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, event)
	return len(c.events) - 1
}

// Events returns the log.
func (c *MemCoordinator) Events() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// Progress returns the last progress reported for node's copy of lun.
func (c *MemCoordinator) Progress(lun LUNID, node NodeID) (Progress, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.progress[lun][node]
	return p, ok
}

func (c *MemCoordinator) commitLocked(lun LUNID, v View, event string) {
	c.views[lun] = v
	c.events = append(c.events, event)
	for _, ch := range c.watchers[lun] {
		ch <- v.Clone()
	}
}

// View returns lun's view.
func (c *MemCoordinator) View(ctx context.Context, lun LUNID) (View, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.views[lun]
	if !ok {
		return View{}, fmt.Errorf("replication: no LUN %d", lun)
	}
	return v.Clone(), nil
}

func (c *MemCoordinator) propose(ctx context.Context, op string, lun LUNID, epoch uint64, node NodeID, change func(*View) (string, bool)) error {
	c.mu.Lock()
	delay, gate, fault := c.delay, c.gate, c.fault
	var fail, after error
	if len(c.failNext) > 0 {
		fail, c.failNext = c.failNext[0], c.failNext[1:]
	}
	c.mu.Unlock()
	if fault != nil && fail == nil {
		fail, after = fault(op, lun, node)
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail != nil {
		return fail
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.views[lun]
	if !ok {
		return fmt.Errorf("replication: no LUN %d", lun)
	}
	if v.Epoch != epoch {
		return ErrStaleView
	}
	v = v.Clone()
	if event, changed := change(&v); changed {
		c.commitLocked(lun, v, event)
	}
	return after
}

// DropFromInSync removes node from lun's in-sync set.
func (c *MemCoordinator) DropFromInSync(ctx context.Context, lun LUNID, epoch uint64, node NodeID) error {
	return c.propose(ctx, "drop", lun, epoch, node, func(v *View) (string, bool) {
		if node == v.Owner || !v.IsInSync(node) {
			return "", false
		}
		v.InSync = slices.DeleteFunc(v.InSync, func(n NodeID) bool { return n == node })
		return fmt.Sprintf("drop lun=%d epoch=%d node=%s", lun, epoch, node), true
	})
}

// MarkInSync adds node to lun's in-sync set and records gen (when not
// zero) as its generation. The view's Gens is created for it if nil.
func (c *MemCoordinator) MarkInSync(ctx context.Context, lun LUNID, epoch uint64, node NodeID, gen Generation) error {
	return c.propose(ctx, "insync", lun, epoch, node, func(v *View) (string, bool) {
		if !v.IsReplica(node) {
			return "", false
		}
		recorded := !gen.IsZero() && v.Gens[node] != gen
		if recorded {
			if v.Gens == nil {
				v.Gens = map[NodeID]Generation{}
			}
			v.Gens[node] = gen
		}
		if v.IsInSync(node) {
			if recorded {
				return fmt.Sprintf("generation lun=%d epoch=%d node=%s gen=%s", lun, epoch, node, gen), true
			}
			return "", false
		}
		v.InSync = append(v.InSync, node)
		return fmt.Sprintf("insync lun=%d epoch=%d node=%s gen=%s", lun, epoch, node, gen), true
	})
}

// RecordGenerations records gens in lun's view and clears Fresh.
func (c *MemCoordinator) RecordGenerations(ctx context.Context, lun LUNID, epoch uint64, gens map[NodeID]Generation) error {
	return c.propose(ctx, "generations", lun, epoch, "", func(v *View) (string, bool) {
		changed := v.Fresh
		v.Fresh = false
		if v.Gens == nil {
			v.Gens = map[NodeID]Generation{}
		}
		for n, g := range gens {
			if v.IsReplica(n) && !g.IsZero() && v.Gens[n] != g {
				v.Gens[n] = g
				changed = true
			}
		}
		return fmt.Sprintf("generations lun=%d epoch=%d %d copies", lun, epoch, len(gens)), changed
	})
}

// ReportProgress records p.
func (c *MemCoordinator) ReportProgress(ctx context.Context, lun LUNID, epoch uint64, node NodeID, p Progress) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.views[lun]; !ok || v.Epoch != epoch {
		return ErrStaleView
	}
	if c.progress[lun] == nil {
		c.progress[lun] = map[NodeID]Progress{}
	}
	c.progress[lun][node] = p
	return nil
}

// Watch delivers later views of lun to fn, in order, from one goroutine.
func (c *MemCoordinator) Watch(lun LUNID, fn func(View)) (cancel func()) {
	ch := make(chan View, 1024)
	c.mu.Lock()
	if c.watchers[lun] == nil {
		c.watchers[lun] = map[int]chan View{}
	}
	id := c.nextW
	c.nextW++
	c.watchers[lun][id] = ch
	c.mu.Unlock()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case v := <-ch:
				fn(v)
			case <-stop:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.watchers[lun], id)
			c.mu.Unlock()
			close(stop)
		})
	}
}

// ErrNoQuorum is what tests inject with FailNext to model a lost quorum.
var ErrNoQuorum = errors.New("replication: no quorum (test)")
