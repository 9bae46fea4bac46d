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
//
// The window is the session's queue depth: a SCSI task (submitTask) keeps
// its CmdSN's slot after delivery until it completes (release), so
//
//	MaxCmdSN = ExpCmdSN - 1 + depth - held
//
// where held counts delivered tasks not yet released. At most depth tasks
// are therefore live at once: held ones plus those waiting in pending,
// whose CmdSNs lie in [ExpCmdSN, MaxCmdSN]. MaxCmdSN never decreases (an
// initiator ignores a smaller one, section 4.2.2.1): delivering a task
// raises ExpCmdSN and held together, delivering anything else or
// releasing a task raises MaxCmdSN by one.
type sequencer struct {
	// deliverMu serialises delivery, so that two connections cannot
	// interleave the commands they release.
	deliverMu sync.Mutex

	mu      sync.Mutex
	exp     uint32
	depth   uint32
	held    uint32 // delivered tasks not yet released
	queued  uint32 // tasks waiting in pending
	peak    uint32 // highest held+queued so far
	pending map[uint32]seqEntry

	// Published for the writers, which stamp every PDU they send.
	expA, maxA atomic.Uint32
}

// seqEntry is a command waiting for its turn; task entries keep a window
// slot once delivered.
type seqEntry struct {
	fn   func()
	task bool
}

func newSequencer(expCmdSN, depth uint32) *sequencer {
	if depth == 0 {
		depth = 1
	}
	q := &sequencer{exp: expCmdSN, depth: depth, pending: map[uint32]seqEntry{}}
	q.publish()
	return q
}

func (q *sequencer) maxLocked() uint32 { return q.exp - 1 + q.depth - q.held }

func (q *sequencer) publish() {
	q.expA.Store(q.exp)
	q.maxA.Store(q.maxLocked())
}

// window returns ExpCmdSN and MaxCmdSN as the initiator should see them now.
func (q *sequencer) window() (exp, max uint32) { return q.expA.Load(), q.maxA.Load() }

// inWindowLocked reports exp <= sn <= max; false for every sn when the
// window is closed (max = exp - 1).
func (q *sequencer) inWindowLocked(sn uint32) bool {
	return q.held < q.depth && snLessEq(q.exp, sn) && snLessEq(sn, q.maxLocked())
}

// inWindow reports whether sn lies in [ExpCmdSN, MaxCmdSN].
func (q *sequencer) inWindow(sn uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.inWindowLocked(sn)
}

// submit hands over a non-immediate command that is not a SCSI task
// (NOP-Out, task management, text, logout) with CmdSN sn; fn runs (on the
// caller's goroutine, or later on the goroutine that fills the gap before
// it) when every lower CmdSN has been delivered, and its slot is free
// again at once. fn may be nil: the CmdSN is then just consumed. submit
// returns false when the command is ignored (outside the window, or a
// duplicate of a waiting one).
func (q *sequencer) submit(sn uint32, fn func()) bool {
	return q.submitEntry(sn, seqEntry{fn: fn})
}

// submitTask is submit for a SCSI task: once delivered, it holds its
// window slot until release is called for it.
func (q *sequencer) submitTask(sn uint32, fn func()) bool {
	return q.submitEntry(sn, seqEntry{fn: fn, task: true})
}

func (q *sequencer) submitEntry(sn uint32, e seqEntry) bool {
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
		q.pending[sn] = e
		if e.task {
			q.queued++
			q.notePeakLocked()
		}
		q.mu.Unlock()
		return true
	}
	run := []func(){e.fn}
	q.deliverLocked(e, false)
	for {
		f, ok := q.pending[q.exp]
		if !ok {
			break
		}
		delete(q.pending, q.exp)
		run = append(run, f.fn)
		q.deliverLocked(f, true)
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

// deliverLocked advances ExpCmdSN past e; a task keeps its slot.
func (q *sequencer) deliverLocked(e seqEntry, wasPending bool) {
	q.exp++
	if !e.task {
		return
	}
	q.held++
	if wasPending {
		q.queued--
	}
	q.notePeakLocked()
}

func (q *sequencer) notePeakLocked() {
	q.peak = max(q.peak, q.held+q.queued)
}

// release frees the window slot of a delivered task that has completed;
// MaxCmdSN moves up by one. It is called once per delivered task.
func (q *sequencer) release() {
	q.mu.Lock()
	if q.held > 0 {
		q.held--
	}
	q.publish()
	q.mu.Unlock()
}

// slots returns the tasks holding a window slot now (delivered and not
// released, or waiting for their turn) and the most there ever were.
func (q *sequencer) slots() (live, peak uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.held + q.queued, q.peak
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
	q.pending = map[uint32]seqEntry{}
	q.queued = 0
	q.mu.Unlock()
}
