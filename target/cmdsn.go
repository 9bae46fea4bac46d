package target

import (
	"sync"
	"sync/atomic"
)

// Serial number arithmetic (RFC 1982 with SERIAL_BITS = 32), as RFC 7143
// section 4.2.2.1 requires for CmdSN, StatSN and DataSN comparisons.
func snLess(a, b uint32) bool { return a != b && int32(a-b) < 0 }

// snLessEq reports a <= b in serial number arithmetic.
func snLessEq(a, b uint32) bool { return a == b || int32(a-b) < 0 }

// sequencer is the CmdSN window of one session (RFC 7143 section 4.2.2).
// Non-immediate commands are delivered in CmdSN order whatever connection
// they arrived on; a command ahead of ExpCmdSN waits in pending; a command
// outside [ExpCmdSN, MaxCmdSN] is silently ignored (section 4.2.2.1).
// Immediate commands bypass it.
type sequencer struct {
	// deliverMu serialises delivery, so that two connections cannot
	// interleave the commands they release.
	deliverMu sync.Mutex

	mu      sync.Mutex
	exp     uint32
	depth   uint32
	pending map[uint32]func()

	// Published for the writers, which stamp every PDU they send.
	expA, maxA atomic.Uint32
}

func newSequencer(expCmdSN, depth uint32) *sequencer {
	if depth == 0 {
		depth = 1
	}
	q := &sequencer{exp: expCmdSN, depth: depth, pending: map[uint32]func(){}}
	q.publish()
	return q
}

func (q *sequencer) publish() {
	q.expA.Store(q.exp)
	q.maxA.Store(q.exp + q.depth - 1)
}

// window returns ExpCmdSN and MaxCmdSN as the initiator should see them now.
func (q *sequencer) window() (exp, max uint32) { return q.expA.Load(), q.maxA.Load() }

func (q *sequencer) inWindowLocked(sn uint32) bool {
	return snLessEq(q.exp, sn) && snLessEq(sn, q.exp+q.depth-1)
}

// inWindow reports whether sn lies in [ExpCmdSN, MaxCmdSN].
func (q *sequencer) inWindow(sn uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.inWindowLocked(sn)
}

// submit hands over a non-immediate command with CmdSN sn; fn runs (on the
// caller's goroutine, or later on the goroutine that fills the gap before
// it) when every lower CmdSN has been delivered. fn may be nil: the CmdSN
// is then just consumed. submit returns false when the command is ignored
// (outside the window, or a duplicate of a waiting one).
func (q *sequencer) submit(sn uint32, fn func()) bool {
	q.deliverMu.Lock()
	defer q.deliverMu.Unlock()
	q.mu.Lock()
	if !q.inWindowLocked(sn) {
		q.mu.Unlock()
		return false
	}
	if _, dup := q.pending[sn]; dup {
		q.mu.Unlock()
		return false
	}
	if sn != q.exp {
		q.pending[sn] = fn
		q.mu.Unlock()
		return true
	}
	run := []func(){fn}
	q.exp++
	for {
		f, ok := q.pending[q.exp]
		if !ok {
			break
		}
		delete(q.pending, q.exp)
		run = append(run, f)
		q.exp++
	}
	q.publish()
	q.mu.Unlock()
	for _, f := range run {
		if f != nil {
			f()
		}
	}
	return true
}

// consume marks sn as received without a command (RFC 7143 section
// 11.5.1: an ABORT TASK naming a task never received, whose RefCmdSN is in
// the window, makes the target consider that CmdSN received). It reports
// whether sn was in the window.
func (q *sequencer) consume(sn uint32) bool {
	q.mu.Lock()
	_, waiting := q.pending[sn]
	q.mu.Unlock()
	if waiting {
		return true
	}
	return q.submit(sn, nil)
}

// reset drops every waiting command (session end).
func (q *sequencer) reset() {
	q.mu.Lock()
	q.pending = map[uint32]func(){}
	q.mu.Unlock()
}
