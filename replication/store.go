package replication

// Store is the local copy a Volume (owner) or Mirror writes to. It is the
// same method set scsi.Backend asks for, so blockstore.File,
// blockstore.BlockDevice and blockstore.Memory satisfy it. Implementations
// must be safe for concurrent use and keep the blockstore contracts:
// WriteAt is durable after Flush (write-back) or at once (write-through).
type Store interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Size() int64
}

// Unmapper is an optional Store capability (UNMAP): the range reads back as
// zeros afterwards. A store without it gets zeros written instead.
type Unmapper interface {
	Unmap(off, length int64) error
}

// FUAWriter is an optional Store capability: write and make durable in one
// call. A store without it gets WriteAt then Flush.
type FUAWriter interface {
	WriteAtFUA(p []byte, off int64) (int, error)
}

func writeFUA(s Store, p []byte, off int64) (int, error) {
	if f, ok := s.(FUAWriter); ok {
		return f.WriteAtFUA(p, off)
	}
	n, err := s.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	return n, s.Flush()
}

func unmapStore(s Store, off, length int64) error {
	if u, ok := s.(Unmapper); ok {
		return u.Unmap(off, length)
	}
	const chunk = 1 << 20
	zero := make([]byte, min(length, chunk))
	for length > 0 {
		n := min(length, chunk)
		if _, err := s.WriteAt(zero[:n], off); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}
