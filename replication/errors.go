package replication

import (
	"errors"
	"fmt"
)

// Sentinel errors of the package. Wrapped errors are matched with errors.Is.
var (
	// ErrNotOwner is returned by every Volume call once this node is no
	// longer (or not yet) the owner of the LUN's current epoch: a mirror
	// refused our epoch, the coordinator's view moved on, or an in-sync
	// change could not be committed. scsi maps it (through ErrorKind) to
	// the ALUA transitioning sense, so initiators retry on another path.
	ErrNotOwner = errors.New("replication: not the owner of the current epoch")

	// ErrClosed is returned by calls on a closed Volume, Conn or Transport.
	ErrClosed = errors.New("replication: closed")

	// ErrTimeout is a mirror that did not answer within Config.AckTimeout.
	ErrTimeout = errors.New("replication: mirror did not answer in time")

	// ErrPeerFailed is wrapped by errors a mirror returned for a request
	// (I/O error on its store, unknown LUN, bad request).
	ErrPeerFailed = errors.New("replication: mirror failed the request")

	// ErrNoCopy is a mirror that holds no copy of the LUN (yet: its node
	// may not have reconciled the LUN). It wraps ErrPeerFailed.
	ErrNoCopy = fmt.Errorf("%w: no copy of the LUN", ErrPeerFailed)

	// ErrCopyLost is a mirror whose node found its copy lost (not the
	// copy the cluster recorded: Mirror.MarkLost): the owner drops it and
	// gives it a full copy. It wraps ErrPeerFailed.
	ErrCopyLost = fmt.Errorf("%w: the copy was lost", ErrPeerFailed)

	// ErrWrongCopy is a copy whose generation is not the one the cluster
	// recorded for it (invariant 7): a blank or replaced disk, a restored
	// backup, another copy's data. A mirror's gets a full copy before it
	// counts as in sync; Volume.Open fails with it when the owner's own
	// copy is the wrong one (the cluster then hands the LUN to another
	// in-sync copy).
	ErrWrongCopy = errors.New("replication: the copy is not the one the cluster recorded")

	// ErrEpochUnknown is a mirror that does not know the request's epoch
	// as committed (StatusEpochUnknown): its node's state may trail the
	// leader's, so the owner's hello retries for a while. An EpochCheck
	// returns it for an epoch it does not know. It wraps ErrPeerFailed.
	ErrEpochUnknown = fmt.Errorf("%w: epoch not committed on the mirror's node (yet)", ErrPeerFailed)

	// ErrInvalidConfig is wrapped by every Config.Validate failure.
	ErrInvalidConfig = errors.New("replication: invalid config")

	// ErrOutOfRange is a request outside the volume.
	ErrOutOfRange = errors.New("replication: range beyond end of volume")

	// ErrBadMessage is a frame that does not decode: bad magic, version,
	// type, length or checksum. A connection that reads one is closed.
	ErrBadMessage = errors.New("replication: bad message")

	// ErrTooLarge is a frame whose header announces a payload above the
	// reader's limit (see TCPServer.SetMaxPayload): it is refused before
	// any of the payload is read or allocated, and the connection closed.
	// It wraps ErrBadMessage.
	ErrTooLarge = fmt.Errorf("%w: payload too large", ErrBadMessage)

	// ErrShortMessage is returned by DecodeMessage when the buffer holds
	// less than one whole frame.
	ErrShortMessage = errors.New("replication: short message")

	// ErrEpochReused is returned by Open when a mirror has applied writes
	// of this epoch beyond what this Volume sent: another Volume served
	// the same epoch. Every Open needs an epoch of its own.
	ErrEpochReused = fmt.Errorf("%w: epoch already served by another volume", ErrNotOwner)

	// ErrNotSyncing is returned by Resync for a node that is in sync or is
	// not a replica of the LUN.
	ErrNotSyncing = errors.New("replication: node is not an out-of-sync replica")
)

// StaleEpochError is what a mirror answers to a request whose epoch is older
// than the newest it has seen (fencing). The owner that receives it has been
// deposed: it stops serving and answers ErrNotOwner.
type StaleEpochError struct {
	LUN    LUNID
	Epoch  uint64 // the epoch of the refused request
	Newest uint64 // the newest epoch the mirror has seen
}

func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("replication: LUN %d: epoch %d is stale, newest seen is %d", e.LUN, e.Epoch, e.Newest)
}

// Is makes errors.Is(err, ErrNotOwner) hold for a stale epoch.
func (e *StaleEpochError) Is(target error) bool { return target == ErrNotOwner }
