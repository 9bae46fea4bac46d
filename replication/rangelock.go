package replication

import "sync"

// rangeLock orders operations on overlapping byte ranges: lock waits until
// no held range overlaps. A write holds its range until every copy
// answered, so two overlapping writes reach every copy in the same order
// (their sequence numbers are assigned in lock order), and a resync or
// verify of a region never interleaves with a write to it.
type rangeLock struct {
	mu   sync.Mutex
	held map[*heldRange]struct{}
}

type heldRange struct {
	off, end int64
	done     chan struct{}
}

func (r *rangeLock) lock(off, n int64) *heldRange {
	h := &heldRange{off: off, end: off + n, done: make(chan struct{})}
	for {
		r.mu.Lock()
		var wait chan struct{}
		for o := range r.held {
			if o.off < h.end && h.off < o.end {
				wait = o.done
				break
			}
		}
		if wait == nil {
			if r.held == nil {
				r.held = map[*heldRange]struct{}{}
			}
			r.held[h] = struct{}{}
			r.mu.Unlock()
			return h
		}
		r.mu.Unlock()
		<-wait
	}
}

func (r *rangeLock) unlock(h *heldRange) {
	r.mu.Lock()
	delete(r.held, h)
	r.mu.Unlock()
	close(h.done)
}
