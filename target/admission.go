package target

import (
	"slices"
	"sync"
)

// Admission limits of a session: how many tasks it may hold and how much
// write data. The CmdSN window (cmdsn.go) bounds non-immediate tasks; this
// file bounds immediate tasks and the bytes of write data buffers.
//
// A write task's buffer has two parts. The unsolicited part (immediate
// data plus, with InitialR2T=No, up to FirstBurstLength of unsolicited
// Data-Out) is sent without asking: the initiator may push it for every
// command of a full window, so the budget sets window × FirstBurstLength
// aside for it. The solicited part is asked for by R2Ts, which go out only
// once the bytes are granted from the rest of the budget; a write that
// does not fit waits, in arrival order, until enough tasks complete. An
// immediate task needs its whole buffer granted on arrival. Since
// ServerConfig.Validate requires the rest to hold MaxCommandData, every
// waiting write fits once the tasks holding grants complete, and those
// (receiving data, bounded by DataOutTimeout, or executing) always do.

// maxImmediateTasks is how many immediate SCSI tasks a connection may have
// in progress: RFC 7143 section 4.2.2.1 asks a target to handle at least
// one immediate non-task-management request per connection. One more is
// answered with TASK SET FULL (SAM-5 5.3.1), which an initiator retries.
const maxImmediateTasks = 1

// writeBudget accounts the write data buffers of one session.
type writeBudget struct {
	mu       sync.Mutex
	unsolCap uint64 // window × FirstBurstLength
	grantCap uint64 // the rest of the budget
	unsol    uint64 // held by unsolicited parts
	granted  uint64 // held by solicited parts and immediate tasks
	peak     uint64 // highest unsol+granted so far
	waiting  []*task
}

// taskBudget is a task's share of its session's budget, guarded by
// writeBudget.mu.
type taskBudget struct {
	unsol, granted uint32
	waiting        bool
}

func newWriteBudget(limit uint64, window, firstBurst uint32) *writeBudget {
	unsolCap := min(uint64(window)*uint64(firstBurst), limit)
	return &writeBudget{unsolCap: unsolCap, grantCap: limit - unsolCap}
}

// admitResult is what admit decided for a write task.
type admitResult uint8

const (
	admitGranted admitResult = iota // the whole buffer is reserved
	admitWaiting                    // the unsolicited part is; the rest waits
	admitFull                       // nothing is: answer TASK SET FULL
)

// admit reserves the buffer of write task t: unsol bytes of unsolicited
// data it may receive unasked, and t.edtl-unsol more that R2Ts will ask
// for. An immediate task needs all of it granted now.
func (b *writeBudget) admit(t *task, unsol uint32) admitResult {
	b.mu.Lock()
	defer b.mu.Unlock()
	rest := t.edtl - unsol
	if t.immediate {
		if len(b.waiting) > 0 || b.granted+uint64(t.edtl) > b.grantCap {
			return admitFull
		}
		b.granted += uint64(t.edtl)
		t.budget.granted = t.edtl
		b.notePeakLocked()
		return admitGranted
	}
	// Within the window this always fits; a duplicate CmdSN on another
	// connection may not (it is then ignored anyway).
	if b.unsol+uint64(unsol) > b.unsolCap || uint64(rest) > b.grantCap {
		return admitFull
	}
	b.unsol += uint64(unsol)
	t.budget.unsol = unsol
	defer b.notePeakLocked()
	if rest == 0 {
		return admitGranted
	}
	if len(b.waiting) == 0 && b.granted+uint64(rest) <= b.grantCap {
		b.granted += uint64(rest)
		t.budget.granted = rest
		return admitGranted
	}
	t.budget.waiting = true
	b.waiting = append(b.waiting, t)
	return admitWaiting
}

func (b *writeBudget) notePeakLocked() { b.peak = max(b.peak, b.unsol+b.granted) }

// release returns t's reservation and grants what now fits to the writes
// waiting, in order; it returns them so that the caller can solicit their
// data (outside the lock).
func (b *writeBudget) release(t *task) []*task {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unsol -= uint64(t.budget.unsol)
	b.granted -= uint64(t.budget.granted)
	t.budget.unsol, t.budget.granted = 0, 0
	if t.budget.waiting {
		t.budget.waiting = false
		if i := slices.Index(b.waiting, t); i >= 0 {
			b.waiting = slices.Delete(b.waiting, i, i+1)
		}
	}
	var grants []*task
	for len(b.waiting) > 0 {
		h := b.waiting[0]
		rest := h.edtl - h.budget.unsol
		if b.granted+uint64(rest) > b.grantCap {
			break
		}
		b.granted += uint64(rest)
		h.budget.granted = rest
		h.budget.waiting = false
		b.waiting = slices.Delete(b.waiting, 0, 1)
		grants = append(grants, h)
	}
	b.notePeakLocked()
	return grants
}

// admissionStats are a session's admission counters.
type admissionStats struct {
	liveTasks, peakLiveTasks uint32 // non-immediate tasks holding a window slot
	window                   uint32 // the session's CmdSN window
	immediateTasks           int    // immediate tasks in progress
	bytes, peakBytes         uint64 // reserved write buffer bytes
	unsolBytes, grantBytes   uint64
	unsolCap, grantCap       uint64
	waiting                  int // writes waiting for a grant
}

// admission returns the session's admission counters.
func (ss *session) admission() admissionStats {
	var s admissionStats
	s.liveTasks, s.peakLiveTasks = ss.seq.slots()
	s.window = ss.seq.depth
	ss.mu.Lock()
	for _, c := range ss.conns {
		s.immediateTasks += int(c.immTasks.Load())
	}
	ss.mu.Unlock()
	b := ss.budget
	b.mu.Lock()
	s.unsolBytes, s.grantBytes = b.unsol, b.granted
	s.bytes, s.peakBytes = b.unsol+b.granted, b.peak
	s.unsolCap, s.grantCap = b.unsolCap, b.grantCap
	s.waiting = len(b.waiting)
	b.mu.Unlock()
	return s
}
