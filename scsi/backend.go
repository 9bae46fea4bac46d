package scsi

// Backend is the volume a logical unit reads and writes: a local blockstore,
// or a replicated volume wrapping one. Offsets and lengths are in bytes and
// always multiples of the LU's block size. Implementations must be safe for
// concurrent use; the LU serialises overlapping writes where SCSI requires
// atomicity (COMPARE AND WRITE, WRITE ATOMIC).
type Backend interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes every completed write durable (SYNCHRONIZE CACHE).
	Flush() error
	// Size is the capacity in bytes.
	Size() int64
}

// Unmapper is an optional Backend capability: deallocate a range so that it
// reads back as zeros (UNMAP, WRITE SAME with UNMAP).
type Unmapper interface {
	Unmap(off, length int64) error
}

// ExtentMapper is an optional Backend capability for GET LBA STATUS: it
// reports whether the byte at off is mapped and how many bytes from off
// share that state (at least one block unless at end of device).
type ExtentMapper interface {
	MappedExtent(off int64) (mapped bool, length int64, err error)
}

// ForceUnitAccessWriter is an optional Backend capability: write and make
// durable in one call (FUA). Without it, the LU writes then Flushes.
type ForceUnitAccessWriter interface {
	WriteAtFUA(p []byte, off int64) (int, error)
}

// ErrorKinder lets a Backend classify its errors so the LU can choose the
// sense (e.g. a full disk becomes SPACE ALLOCATION FAILED WRITE PROTECT,
// not a generic medium error). Optional: errors are also checked with
// errors.Is against the blockstore-agnostic sentinels below.
type ErrorKinder interface {
	ErrorKind(err error) BackendErrorKind
}

// BackendErrorKind classifies a backend failure.
type BackendErrorKind int

const (
	BackendErrOther BackendErrorKind = iota
	BackendErrNoSpace
	BackendErrReadOnly
	BackendErrNotReady // e.g. a replicated volume whose owner changed
)
