package blockstore

import (
	"errors"
	"os"
	"syscall"
)

// Sentinel errors. Errors that come from the kernel are *os.PathError values
// wrapping the errno (syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, ...), so
// callers classify them with errors.Is against the errno.
var (
	// ErrOutOfRange is returned for a negative offset, or a write, unmap or
	// extent query that reaches beyond Size. Reads beyond Size return io.EOF
	// instead, as io.ReaderAt requires.
	ErrOutOfRange = errors.New("blockstore: range beyond end of store")

	// ErrInUse is returned when another open file description (this process
	// or another) already serves the same file or device.
	ErrInUse = errors.New("blockstore: store is in use")

	// ErrInvalidOptions is wrapped by every Options.Validate failure.
	ErrInvalidOptions = errors.New("blockstore: invalid options")

	// ErrSize is wrapped when an existing file or device does not match the
	// requested size and the options do not allow fixing that.
	ErrSize = errors.New("blockstore: size mismatch")
)

// readOnlyError is what every mutating call on a read-only store returns:
// an *os.PathError wrapping syscall.EROFS, so errors.Is(err, syscall.EROFS)
// holds (the LU turns it into DATA PROTECT / WRITE PROTECTED).
func readOnlyError(op, path string) error {
	return &os.PathError{Op: op, Path: path, Err: syscall.EROFS}
}

// pathError wraps a raw errno from golang.org/x/sys/unix the way package os
// does, so the errno stays reachable with errors.Is.
func pathError(op, path string, err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}
