package blockstore

import (
	"fmt"
	"log/slog"
	"strings"
)

// Mode is the IO mode of a store, as IET's IOMode=wb|wt|ro.
type Mode int

const (
	// WriteBack: writes land in the page cache (or the device's volatile
	// cache) and become durable at the next Flush. The zero value.
	WriteBack Mode = iota
	// WriteThrough: every write is durable before it returns.
	WriteThrough
	// ReadOnly: every mutating call fails with an error wrapping
	// syscall.EROFS.
	ReadOnly
)

// ParseMode parses "wb", "wt" or "ro" (case-insensitive; the long forms
// "writeback", "writethrough", "readonly" are accepted too).
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "wb", "writeback", "write-back":
		return WriteBack, nil
	case "wt", "writethrough", "write-through":
		return WriteThrough, nil
	case "ro", "readonly", "read-only":
		return ReadOnly, nil
	}
	return 0, fmt.Errorf("blockstore: unknown IO mode %q (want wb, wt or ro)", s)
}

// String returns "wb", "wt" or "ro".
func (m Mode) String() string {
	switch m {
	case WriteBack:
		return "wb"
	case WriteThrough:
		return "wt"
	case ReadOnly:
		return "ro"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

func (m Mode) valid() bool { return m >= WriteBack && m <= ReadOnly }

// Options says how to open a store.
//
// Size rules for files (OpenFile):
//   - Size == 0: serve the existing file at its current size (it must exist
//     and be non-empty).
//   - Size > 0 and the file is missing: Create must be set; the file is
//     created sparse (ftruncate) at Size.
//   - Size > 0 and the file exists: equal size is served as is; a smaller
//     file is an error wrapping ErrSize unless Grow is set, then it is
//     extended (sparse); a larger file is always an error wrapping ErrSize
//     (a store is never shrunk: that would drop data).
//
// For block devices (OpenBlockDevice) Size == 0 serves the whole device and
// Size > 0 serves the first Size bytes (it must fit, and be a multiple of
// the logical sector size); Create and Grow are invalid.
type Options struct {
	Size   int64
	Mode   Mode
	Create bool
	Grow   bool

	// Logger receives rare events (fallbacks such as "filesystem cannot
	// punch holes, writing zeros"). Nil discards them.
	Logger *slog.Logger
}

// Validate checks the options on their own, before any file is touched.
func (o Options) Validate() error {
	switch {
	case !o.Mode.valid():
		return fmt.Errorf("%w: unknown mode %v", ErrInvalidOptions, o.Mode)
	case o.Size < 0:
		return fmt.Errorf("%w: negative size %d", ErrInvalidOptions, o.Size)
	case o.Create && o.Size == 0:
		return fmt.Errorf("%w: Create needs a Size", ErrInvalidOptions)
	case o.Grow && o.Size == 0:
		return fmt.Errorf("%w: Grow needs a Size", ErrInvalidOptions)
	case o.Mode == ReadOnly && (o.Create || o.Grow):
		return fmt.Errorf("%w: a read-only store cannot be created or grown", ErrInvalidOptions)
	}
	return nil
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}
