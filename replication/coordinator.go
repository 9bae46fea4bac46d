package replication

import (
	"context"
	"fmt"
	"time"
)

// ErrStaleView is returned by a Coordinator for a change proposed in an
// epoch that is no longer current (the proposer has been deposed). It
// matches ErrNotOwner.
var ErrStaleView = fmt.Errorf("%w: proposal for an old epoch", ErrNotOwner)

// Coordinator is what the cluster provides (over Raft) for replicated LUNs.
// The contract:
//
//   - View returns the latest committed view of the LUN.
//   - DropFromInSync and MarkInSync propose a change of the in-sync set in
//     epoch and return nil only once the change is committed (applied by
//     a Raft quorum). They fail with an error matching ErrNotOwner when
//     epoch is not the LUN's current epoch, and then nothing committed;
//     any other error leaves the outcome unknown (the change may have
//     committed: a timeout, a leader lost after the append). They are
//     idempotent: dropping a node that is not in sync, or marking one
//     that is, commits nothing and returns nil, so a change of unknown
//     outcome is settled by proposing its opposite. DropFromInSync never
//     removes the owner. MarkInSync with a generation that is not zero
//     records it as the copy's generation (View.Gens) in the same commit,
//     also for a copy in sync already; DropFromInSync leaves the recorded
//     generation alone.
//   - RecordGenerations records the generations of several copies in
//     epoch and clears View.Fresh, in one commit, with the errors and the
//     idempotence of MarkInSync. A coordinator that records no identities
//     (View.Gens nil) is never asked.
//   - Watch calls fn with every view committed after it was called (in
//     commit order, from one goroutine per watcher) until cancel is
//     called. fn must not block for long.
//   - No ownership change happens without a quorum; a new owner comes only
//     from InSync and gets Epoch+1 (invariant 4 and 5 are the cluster's).
//     Every Volume.Open needs an epoch of its own: an owner that restarts
//     gets a new epoch too (sequence numbers restart with the Volume).
type Coordinator interface {
	View(ctx context.Context, lun LUNID) (View, error)
	DropFromInSync(ctx context.Context, lun LUNID, epoch uint64, node NodeID) error
	MarkInSync(ctx context.Context, lun LUNID, epoch uint64, node NodeID, gen Generation) error
	RecordGenerations(ctx context.Context, lun LUNID, epoch uint64, gens map[NodeID]Generation) error
	Watch(lun LUNID, fn func(View)) (cancel func())
}

// ProgressReporter is an optional Coordinator capability: the owner reports
// resync progress, which the cluster records in Raft (for status and so a
// new owner knows a copy was being resynced).
type ProgressReporter interface {
	ReportProgress(ctx context.Context, lun LUNID, epoch uint64, node NodeID, p Progress) error
}

// Progress describes one resync or verify run.
type Progress struct {
	Node         NodeID
	RegionsTotal int64 // dirty regions when the run started, plus any dirtied since
	RegionsDone  int64
	// BytesDone is what the run got through: regions copied and regions
	// compared (and found equal) alike. BytesCopied is the part sent.
	BytesDone   int64
	BytesCopied int64
	Started     time.Time
	// Rate is BytesDone per second since Started; ETA extrapolates it to
	// the regions left. A compare resync copies little or nothing, and is
	// still as far along as the regions it compared.
	Rate float64
	ETA  time.Duration
	Done bool
}
