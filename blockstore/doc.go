// Package blockstore holds the backends a logical unit stores its blocks
// in: regular files (File: sparse, punch-hole discard, SEEK_DATA/SEEK_HOLE),
// block devices (BlockDevice: O_DIRECT with aligned bounce buffers, exclusive
// open, zeroing unmap) and, for tests, memory (Memory) and crash-simulating
// (Crash) stores. It knows nothing of SCSI: byte offsets, lengths, flush,
// discard. It is Linux-only and imports only the standard library and
// golang.org/x/sys/unix.
//
// Every store satisfies the volume interface the scsi package declares
// (ReadAt, WriteAt, Flush, Size) and its optional capabilities (Unmap,
// MappedExtent, WriteAtFUA) structurally; blockstore does not import scsi.
//
// Contracts every store keeps:
//
//   - Safe for concurrent use.
//   - ReadAt follows io.ReaderAt: a read that reaches past Size returns the
//     bytes up to Size and io.EOF. Writes, unmaps and extent queries never
//     go past Size: they fail whole with an error wrapping ErrOutOfRange.
//   - Kernel errors are *os.PathError values wrapping the errno, so
//     errors.Is(err, syscall.ENOSPC) (or EDQUOT, EIO) holds; a read-only
//     store fails every mutating call with an error wrapping syscall.EROFS.
//   - Durability follows the Mode: WriteBack makes writes durable at Flush,
//     WriteThrough before each write returns, and WriteAtFUA always before
//     it returns. Unmap reads back as zeros at once and is as durable as a
//     write in the same mode.
//   - A File or BlockDevice is served by one opener at a time: files hold
//     an flock, devices are opened O_EXCL; a second open fails with an
//     error wrapping ErrInUse that names the path.
package blockstore
