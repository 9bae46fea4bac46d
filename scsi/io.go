package scsi

import (
	"errors"
	"io"
	"syscall"
)

// checkRange returns LOGICAL BLOCK ADDRESS OUT OF RANGE if [lba, lba+n)
// does not fit the LU.
func (lu *LU) checkRange(lba, n uint64) error {
	if lba > lu.blocks || n > lu.blocks-lba {
		return NewSense(KeyIllegalRequest, ASCLBAOutOfRange)
	}
	return nil
}

// readBlocks reads n blocks at lba into a new buffer.
func (lu *LU) readBlocks(lba, n uint64) ([]byte, error) {
	buf := make([]byte, n<<lu.shift)
	if err := lu.readInto(buf, lba); err != nil {
		return nil, err
	}
	return buf, nil
}

// readInto fills p (a whole number of blocks) from lba.
func (lu *LU) readInto(p []byte, lba uint64) error {
	if len(p) == 0 {
		return nil
	}
	n, err := lu.backend.ReadAt(p, int64(lba<<lu.shift))
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err != nil {
		return lu.backendSense(err, true)
	}
	return nil
}

// writeBlocks writes p (a whole number of blocks) at lba. With fua, or when
// the LU has no write cache, the data is durable before it returns.
func (lu *LU) writeBlocks(p []byte, lba uint64, fua bool) error {
	if len(p) == 0 {
		return nil
	}
	off := int64(lba << lu.shift)
	durable := fua || !lu.mode.writeCache()
	if durable {
		if fw, ok := lu.backend.(ForceUnitAccessWriter); ok {
			if _, err := fw.WriteAtFUA(p, off); err != nil {
				return lu.backendSense(err, false)
			}
			return nil
		}
	}
	if _, err := lu.backend.WriteAt(p, off); err != nil {
		return lu.backendSense(err, false)
	}
	if durable {
		if err := lu.backend.Flush(); err != nil {
			return lu.backendSense(err, false)
		}
	}
	return nil
}

// flush makes all completed writes durable.
func (lu *LU) flush() error {
	if err := lu.backend.Flush(); err != nil {
		return lu.backendSense(err, false)
	}
	return nil
}

// backendSense maps a backend error to sense data: a full disk is SPACE
// ALLOCATION FAILED WRITE PROTECT (the initiator may retry after space is
// freed), read-only is WRITE PROTECTED, not-ready is the ALUA transition
// sense, anything else a medium error.
func (lu *LU) backendSense(err error, read bool) error {
	var se *SenseError
	if errors.As(err, &se) {
		return se
	}
	kind := BackendErrOther
	if k, ok := lu.backend.(ErrorKinder); ok {
		kind = k.ErrorKind(err)
	} else if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		kind = BackendErrNoSpace
	} else if errors.Is(err, syscall.EROFS) {
		kind = BackendErrReadOnly
	}
	lu.cfg.Logger.Error("backend I/O failed", "read", read, "err", err)
	switch kind {
	case BackendErrNoSpace:
		return NewSense(KeyDataProtect, ASCSpaceAllocFailedWriteProt)
	case BackendErrReadOnly:
		return NewSense(KeyDataProtect, ASCWriteProtected)
	case BackendErrNotReady:
		return NewSense(KeyNotReady, ASCLUNotReadyTransition)
	}
	if read {
		return NewSense(KeyMediumError, ASCUnrecoveredReadError)
	}
	return NewSense(KeyMediumError, ASCWriteError)
}
