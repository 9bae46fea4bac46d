package replication

import (
	"fmt"
	"log/slog"
	"time"
)

// Config tunes a Volume. Start from DefaultConfig.
type Config struct {
	// AckTimeout is how long the owner waits for a mirror to answer one
	// request before it proposes to drop that mirror from the in-sync set.
	// It must be shorter than the ALUA transition timeout and the failure
	// detection timeout of the cluster (the cluster checks that relation).
	AckTimeout time.Duration

	// RegionSize is the granularity of the dirty-region map, resync and
	// verify: a power of two, at least 4 KiB.
	RegionSize int64

	// ResyncRate caps resync and verify traffic, in bytes per second
	// (token bucket, burst of one region or a tenth of a second, whichever
	// is larger). Zero means unlimited.
	ResyncRate int64

	// MaxInFlight bounds the writes a Volume has outstanding at once.
	MaxInFlight int

	// MaxMessage is the largest payload of one replication message; larger
	// writes are split. At most MaxPayload.
	MaxMessage int

	// WriteThrough asks every copy to make each write durable before it
	// acknowledges (IO mode wt). Write-back (false) acknowledges once the
	// mirror's store took the write; Flush and FUA make it durable on all.
	WriteThrough bool

	// StateDir holds the persisted dirty-region maps. Empty keeps them in
	// memory only: then a restarted owner must give out-of-sync mirrors a
	// full copy.
	StateDir string

	// LocalMirror is this node's Mirror, if it has one. Open fences it at
	// the volume's epoch before serving, so a deposed owner's writes are
	// refused by the new owner's own copy too (the cluster should also
	// call Mirror.Fence, or Mirror.Follow, for every committed epoch).
	LocalMirror *Mirror

	// CheckOnOpen says the previous owner may have stopped with writes in
	// flight (a crash, a takeover): those may be on some copies and not
	// on others, this one included. Then an in-sync copy unreachable at
	// Open is resynced by comparing every region (copying only those
	// that differ), and the cluster runs Repair on the in-sync copies.
	CheckOnOpen bool

	// Down, if set, reports nodes the cluster records dead or gone. Open
	// does not dial an in-sync copy on such a node (a node cut off
	// without a reset would hold Open for the dial timeout): it counts
	// as unreachable at once.
	Down func(NodeID) bool

	Logger *slog.Logger
	Clock  Clock
}

// DefaultConfig returns a config with production defaults.
func DefaultConfig() Config {
	return Config{
		AckTimeout:  5 * time.Second,
		RegionSize:  1 << 20,
		ResyncRate:  100 << 20,
		MaxInFlight: 256,
		MaxMessage:  1 << 20,
	}
}

// Validate checks every field and the relations between them.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.AckTimeout <= 0:
		return bad("AckTimeout %v must be positive", c.AckTimeout)
	case c.RegionSize < 4096 || c.RegionSize&(c.RegionSize-1) != 0:
		return bad("RegionSize %d must be a power of two of at least 4096", c.RegionSize)
	case c.RegionSize > 1<<30:
		return bad("RegionSize %d is above 1 GiB", c.RegionSize)
	case c.ResyncRate < 0:
		return bad("ResyncRate %d must not be negative", c.ResyncRate)
	case c.MaxInFlight <= 0:
		return bad("MaxInFlight %d must be positive", c.MaxInFlight)
	case c.MaxMessage < 4096 || c.MaxMessage > MaxPayload:
		return bad("MaxMessage %d must be within [4096, %d]", c.MaxMessage, MaxPayload)
	case c.RegionSize > MaxPayload:
		return bad("RegionSize %d exceeds the largest message payload %d", c.RegionSize, MaxPayload)
	}
	return nil
}

func (c Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c Config) clock() Clock {
	if c.Clock == nil {
		return SystemClock{}
	}
	return c.Clock
}

// ValidateTimings checks the relation DESIGN.md asks for: a silent mirror
// must be dropped (AckTimeout) before the ALUA transition timeout runs out
// for the initiator, and that before the cluster's failure detection
// declares the owner dead. The cluster calls it with its own timeouts.
func (c Config) ValidateTimings(aluaTransition, failureDetection time.Duration) error {
	if !(c.AckTimeout < aluaTransition && aluaTransition < failureDetection) {
		return fmt.Errorf("%w: want ack timeout %v < ALUA transition timeout %v < failure detection %v",
			ErrInvalidConfig, c.AckTimeout, aluaTransition, failureDetection)
	}
	return nil
}
