package blockstore

import (
	"fmt"
	"io"
)

// readRange clips a read of n bytes at off to a store of size bytes. It
// returns how many bytes to read and the error to return with them: io.EOF
// when the read is cut short by the end of the store (io.ReaderAt).
func readRange(off int64, n int, size int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: read at negative offset %d", ErrOutOfRange, off)
	}
	if off >= size {
		if n == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	if int64(n) > size-off {
		return int(size - off), io.EOF
	}
	return n, nil
}

// writeRange checks that [off, off+n) lies inside a store of size bytes.
// Writes never extend a store: one that does not fit is refused whole.
func writeRange(op string, off, n, size int64) error {
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%w: %s of %d bytes at offset %d (size %d)", ErrOutOfRange, op, n, off, size)
	}
	return nil
}
