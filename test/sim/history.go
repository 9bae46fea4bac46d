package sim

import (
	"fmt"
	"sync"
	"time"
)

// OpKind is what a workload operation did.
type OpKind int

const (
	OpWrite OpKind = iota
	OpRead
	OpFlush
)

func (k OpKind) String() string { return [...]string{"write", "read", "flush"}[k] }

// Outcome is how an operation ended, as its client saw it.
type Outcome int

const (
	// OK: acknowledged (GOOD status).
	OK Outcome = iota
	// Failed: an error status. A failed write may or may not have
	// reached the medium (SCSI gives no promise either way).
	Failed
	// TimedOut: the client stopped waiting (the node was stalled or cut
	// off) and went to another path; the command may still run later.
	TimedOut
)

func (o Outcome) String() string { return [...]string{"ok", "failed", "timed out"}[o] }

// Op is one command a client sent to one node: the unit of the history.
type Op struct {
	ID      int
	Client  string
	Node    string
	Kind    OpKind
	LUN     int // index into the simulation's LUNs
	Block   uint64
	Version uint64 // write: the version sent; read: the version read back
	FUA     bool
	Invoke  time.Time
	Done    time.Time
	Outcome Outcome
	Err     string
}

func (o *Op) String() string {
	s := fmt.Sprintf("#%d %s %s via %s lun%d", o.ID, o.Client, o.Kind, o.Node, o.LUN)
	if o.Kind != OpFlush {
		s += fmt.Sprintf(" block %d v%d", o.Block, o.Version)
	}
	if o.FUA {
		s += " fua"
	}
	s += " " + o.Outcome.String()
	if o.Err != "" {
		s += ": " + o.Err
	}
	return s
}

// History is every operation of a run, in invocation order, and the
// epochs the owners acknowledged writes in.
type History struct {
	mu     sync.Mutex
	ops    []*Op
	epochs map[writeKey]uint64 // acknowledged write -> owner epoch
}

type writeKey struct {
	lun            int
	block, version uint64
}

func newHistory() *History { return &History{epochs: map[writeKey]uint64{}} }

// invoke records the start of an operation and returns it; the caller
// fills in the outcome with complete.
func (h *History) invoke(op Op) *Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.ID = len(h.ops) + 1
	op.Invoke = time.Now()
	p := &op
	h.ops = append(h.ops, p)
	return p
}

func (h *History) complete(op *Op, o Outcome, version uint64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.Done = time.Now()
	op.Outcome = o
	if op.Kind == OpRead {
		op.Version = version
	}
	if err != nil {
		op.Err = err.Error()
	}
}

// ackedEpoch records that the owner of epoch acknowledged the write of
// (lun, block, version) (the node's write hook).
func (h *History) ackedEpoch(lun int, block, version, epoch uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.epochs[writeKey{lun, block, version}] = epoch
}

// snapshot returns a copy of the operations and epochs.
func (h *History) snapshot() ([]Op, map[writeKey]uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ops := make([]Op, len(h.ops))
	for i, p := range h.ops {
		ops[i] = *p
	}
	ep := make(map[writeKey]uint64, len(h.epochs))
	for k, v := range h.epochs {
		ep[k] = v
	}
	return ops, ep
}

// writesOf describes the writes of versions lo..hi of a block, for a
// divergence report: which node took each and how it ended.
func (h *History) writesOf(lun int, block, lo, hi uint64) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, o := range h.ops {
		if o.Kind != OpWrite || o.LUN != lun || o.Block != block || o.Version < lo || o.Version > hi {
			continue
		}
		d := o.String()
		if e, ok := h.epochs[writeKey{lun, block, o.Version}]; ok {
			d += fmt.Sprintf(" (acknowledged in epoch %d)", e)
		}
		out = append(out, fmt.Sprintf("%s [%s..%s]", d, o.Invoke.Format("15:04:05.000"), o.Done.Format("15:04:05.000")))
	}
	return out
}
