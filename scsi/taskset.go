package scsi

import (
	"context"
	"sync"
)

// taskSet is the task set of one logical unit (SAM-5 8.6): every command
// between its arrival and its completion. SIMPLE tasks run concurrently;
// an ORDERED task waits until every older task has ended and holds back
// every newer SIMPLE or ORDERED one until it has ended itself; a HEAD OF
// QUEUE task runs at once. (QUEUE ALGORITHM MODIFIER is 1 in the control
// mode page: unrestricted reordering of SIMPLE tasks.)
//
// Task management aborts tasks here: it cancels their context (which ends
// a wait in the task set at once) and then waits until each has left the
// set, so a TMF never returns while an affected task still runs.
type taskSet struct {
	mu     sync.Mutex
	active []*tsEntry // in arrival order
}

// tsEntry is one task in the task set.
type tsEntry struct {
	key    string // I_T nexus
	tag    uint32
	attr   TaskAttr
	cancel context.CancelFunc
	done   chan struct{}

	// aborted is set (under taskSet.mu) by task management; the command
	// then ends with TASK ABORTED whatever its handler returned.
	aborted bool
}

// enter adds t to the task set and blocks until the task attribute rules
// let it run. It returns false if the task was aborted (or its context
// cancelled) while it waited; leave must be called in every case.
func (s *taskSet) enter(t *task) bool {
	ctx, cancel := context.WithCancel(t.ctx)
	e := &tsEntry{key: t.nexusKey(), tag: t.cmd.Tag, attr: t.cmd.Attr, cancel: cancel, done: make(chan struct{})}
	var waits []chan struct{}
	s.mu.Lock()
	for _, o := range s.active {
		switch e.attr {
		case TaskHeadOfQueue:
		case TaskOrdered:
			waits = append(waits, o.done)
		default: // SIMPLE, and ACA (NACA is not supported, so no ACA exists)
			if o.attr == TaskOrdered {
				waits = append(waits, o.done)
			}
		}
	}
	s.active = append(s.active, e)
	s.mu.Unlock()
	t.ctx, t.entry = ctx, e
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

// leave removes e from the task set, wakes the tasks waiting for it and
// reports whether it was aborted.
func (s *taskSet) leave(e *tsEntry) (aborted bool) {
	s.mu.Lock()
	for i, o := range s.active {
		if o == e {
			s.active = append(s.active[:i:i], s.active[i+1:]...)
			break
		}
	}
	aborted = e.aborted
	s.mu.Unlock()
	e.cancel()
	close(e.done)
	return aborted
}

// abort marks every task that match selects as aborted, cancels it and
// waits until all of them have left the task set. It returns the nexus
// keys of the aborted tasks (one per task).
func (s *taskSet) abort(match func(*tsEntry) bool) []string {
	var hit []*tsEntry
	s.mu.Lock()
	for _, e := range s.active {
		if match(e) {
			e.aborted = true
			e.cancel()
			hit = append(hit, e)
		}
	}
	s.mu.Unlock()
	keys := make([]string, 0, len(hit))
	for _, e := range hit {
		<-e.done
		keys = append(keys, e.key)
	}
	return keys
}

// count returns how many tasks are in the set (for tests).
func (s *taskSet) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.active)
}
