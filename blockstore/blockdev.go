package blockstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bounceSize is the size of one bounce buffer: IO through unaligned user
// buffers is copied in steps of at most this many bytes.
const bounceSize = 1 << 20

// BlockDevice is a store backed by a block device, opened exclusively
// (O_EXCL: the kernel refuses it while mounted or opened exclusively
// elsewhere) and, where the device allows, with O_DIRECT so that the page
// cache is bypassed. O_DIRECT needs buffers, offsets and lengths aligned to
// the logical sector size: aligned requests go straight to the device, the
// rest through an aligned bounce buffer (read-modify-write for partial
// sectors). Safe for concurrent use.
type BlockDevice struct {
	f      *os.File
	rc     syscall.RawConn
	path   string
	size   int64
	mode   Mode
	log    *slog.Logger
	sector int  // logical sector size, a power of two >= 512
	phys   int  // physical sector size (informational)
	direct bool // opened with O_DIRECT

	// rmw is held exclusively by writes that read-modify-write partial
	// sectors and shared by every other write and unmap, so a RMW never
	// writes back stale bytes over a concurrent write of the same sector.
	rmw sync.RWMutex

	bounce sync.Pool // *[]byte, bounceSize bytes aligned to bounceAlign

	noRWF   atomic.Bool // pwritev2(RWF_DSYNC) unsupported
	noPunch atomic.Bool // fallocate(PUNCH_HOLE) unsupported: use BLKZEROOUT
}

// OpenBlockDevice opens the block device at path as a store.
func OpenBlockDevice(path string, opts Options) (*BlockDevice, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Create || opts.Grow {
		return nil, fmt.Errorf("%w: Create and Grow do not apply to block devices", ErrInvalidOptions)
	}
	flags := os.O_RDWR
	if opts.Mode == ReadOnly {
		flags = os.O_RDONLY
	}
	if opts.Mode == WriteThrough {
		// With O_DIRECT the kernel turns O_DSYNC into FUA writes (or
		// write + cache flush on devices without FUA).
		flags |= syscall.O_DSYNC
	}
	flags |= syscall.O_EXCL // without O_CREAT: exclusive open of a block device

	log := opts.logger()
	direct := true
	f, err := os.OpenFile(path, flags|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		log.Warn("blockstore: device refuses O_DIRECT, using the page cache", "path", path)
		direct = false
		f, err = os.OpenFile(path, flags, 0)
	}
	if err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return nil, fmt.Errorf("%w: %s is mounted or opened exclusively by another process: %w", ErrInUse, path, err)
		}
		return nil, fmt.Errorf("blockstore: %w", err)
	}
	d, err := newBlockDevice(f, path, opts, direct, nil)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// geometry is what newBlockDevice would otherwise ask the device for; tests
// pass it to run the aligned and bounce paths over a regular file.
type geometry struct {
	size          int64
	logical, phys int
}

func newBlockDevice(f *os.File, path string, opts Options, direct bool, geo *geometry) (*BlockDevice, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("blockstore: %s: %w", path, err)
	}
	d := &BlockDevice{f: f, rc: rc, path: path, mode: opts.Mode, log: opts.logger(), direct: direct}
	if geo == nil {
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("blockstore: %w", err)
		}
		if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			return nil, fmt.Errorf("blockstore: %s is not a block device (%v); open files with OpenFile", path, fi.Mode().Type())
		}
		g := geometry{}
		err = d.control(func(fd int) error {
			size, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
			if err != nil {
				return fmt.Errorf("BLKGETSIZE64: %w", err)
			}
			g.size = int64(size)
			if g.logical, err = unix.IoctlGetInt(fd, unix.BLKSSZGET); err != nil {
				return fmt.Errorf("BLKSSZGET: %w", err)
			}
			if g.phys, err = unix.IoctlGetInt(fd, unix.BLKPBSZGET); err != nil {
				g.phys = g.logical
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("blockstore: %s: %w", path, err)
		}
		geo = &g
	}
	if geo.logical < 512 || geo.logical&(geo.logical-1) != 0 || geo.logical > bounceSize {
		return nil, fmt.Errorf("blockstore: %s: unsupported logical sector size %d", path, geo.logical)
	}
	d.sector, d.phys = geo.logical, max(geo.phys, geo.logical)
	switch {
	case opts.Size == 0:
		d.size = geo.size
	case opts.Size > geo.size:
		return nil, fmt.Errorf("%w: %s holds %d bytes, less than the requested %d", ErrSize, path, geo.size, opts.Size)
	case opts.Size%int64(d.sector) != 0:
		return nil, fmt.Errorf("%w: size %d is not a multiple of the %d-byte sectors of %s", ErrSize, opts.Size, d.sector, path)
	default:
		d.size = opts.Size
	}
	if d.size == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrSize, path)
	}
	align := max(d.sector, 4096)
	d.bounce.New = func() any { b := alignedBuf(bounceSize, align); return &b }
	return d, nil
}

func (d *BlockDevice) control(fn func(fd int) error) error { return controlFD(d.rc, fn) }

// Path returns the device name.
func (d *BlockDevice) Path() string { return d.path }

// Mode returns the IO mode.
func (d *BlockDevice) Mode() Mode { return d.mode }

// Size returns the capacity in bytes.
func (d *BlockDevice) Size() int64 { return d.size }

// LogicalBlockSize returns the device's logical sector size (BLKSSZGET).
func (d *BlockDevice) LogicalBlockSize() int { return d.sector }

// PhysicalBlockSize returns the device's physical sector size (BLKPBSZGET).
func (d *BlockDevice) PhysicalBlockSize() int { return d.phys }

// Direct reports whether IO bypasses the page cache (O_DIRECT).
func (d *BlockDevice) Direct() bool { return d.direct }

func (d *BlockDevice) aligned(p []byte, off int64) bool {
	return !d.direct || isAligned(p, off, d.sector)
}

// span returns the sector-aligned range covering [off, off+n).
func (d *BlockDevice) span(off, n int64) (lo, hi int64) {
	mask := int64(d.sector - 1)
	return off &^ mask, (off + n + mask) &^ mask
}

// ReadAt implements io.ReaderAt.
func (d *BlockDevice) ReadAt(p []byte, off int64) (int, error) {
	n, eof := readRange(off, len(p), d.size)
	if n == 0 {
		return 0, eof
	}
	q := p[:n]
	if d.aligned(q, off) {
		if _, err := d.f.ReadAt(q, off); err != nil {
			return 0, err
		}
		return n, eof
	}
	bp := d.bounce.Get().(*[]byte)
	defer d.bounce.Put(bp)
	lo, hi := d.span(off, int64(n))
	for pos := lo; pos < hi; pos += bounceSize {
		b := (*bp)[:min(bounceSize, hi-pos)]
		if _, err := d.f.ReadAt(b, pos); err != nil {
			return 0, err
		}
		// Copy the part of [pos, pos+len(b)) that lies in [off, off+n).
		from := max(pos, off)
		to := min(pos+int64(len(b)), off+int64(n))
		copy(q[from-off:to-off], b[from-pos:to-pos])
	}
	return n, eof
}

// WriteAt writes p at off. In WriteThrough mode the data is durable when it
// returns. A write beyond Size is refused whole.
func (d *BlockDevice) WriteAt(p []byte, off int64) (int, error) {
	return d.write("write", p, off, 0)
}

// WriteAtFUA writes p at off and makes it durable before returning
// (pwritev2 with RWF_DSYNC, a FUA write under O_DIRECT).
func (d *BlockDevice) WriteAtFUA(p []byte, off int64) (int, error) {
	if d.mode != WriteBack {
		return d.WriteAt(p, off)
	}
	if !d.noRWF.Load() {
		n, err := d.write("write", p, off, unix.RWF_DSYNC)
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return n, err
		}
		d.noRWF.Store(true)
		d.log.Info("blockstore: pwritev2(RWF_DSYNC) unsupported, FUA writes use fdatasync", "path", d.path)
	}
	n, err := d.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	if err := d.Flush(); err != nil {
		return 0, err
	}
	return n, nil
}

func (d *BlockDevice) write(op string, p []byte, off int64, flags int) (int, error) {
	if d.mode == ReadOnly {
		return 0, readOnlyError(op, d.path)
	}
	if err := writeRange(op, off, int64(len(p)), d.size); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if d.aligned(p, off) {
		d.rmw.RLock()
		defer d.rmw.RUnlock()
		if err := d.pwrite(p, off, flags); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	bp := d.bounce.Get().(*[]byte)
	defer d.bounce.Put(bp)
	lo, hi := d.span(off, int64(len(p)))
	partial := lo != off || hi != off+int64(len(p))
	if partial {
		d.rmw.Lock()
		defer d.rmw.Unlock()
	} else {
		d.rmw.RLock()
		defer d.rmw.RUnlock()
	}
	end := off + int64(len(p))
	for pos := lo; pos < hi; pos += bounceSize {
		b := (*bp)[:min(bounceSize, hi-pos)]
		from := max(pos, off)
		to := min(pos+int64(len(b)), end)
		if from > pos || to < pos+int64(len(b)) {
			// Partial sectors at the edges: read what we do not overwrite.
			if _, err := d.f.ReadAt(b, pos); err != nil {
				return 0, err
			}
		}
		copy(b[from-pos:to-pos], p[from-off:to-off])
		if err := d.pwrite(b, pos, flags); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// pwrite writes all of b at off, with pwritev2 flags when flags != 0.
func (d *BlockDevice) pwrite(b []byte, off int64, flags int) error {
	if flags == 0 {
		_, err := d.f.WriteAt(b, off)
		return err
	}
	for done := 0; done < len(b); {
		var n int
		err := d.control(func(fd int) error {
			var err error
			n, err = unix.Pwritev2(fd, [][]byte{b[done:]}, off+int64(done), flags)
			return err
		})
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return pathError("pwritev2", d.path, err)
		}
		if n == 0 {
			return pathError("pwritev2", d.path, io.ErrShortWrite)
		}
		done += n
	}
	return nil
}

// Flush makes every completed write durable: fdatasync, which on a block
// device writes back the page cache and flushes the device's volatile
// cache. A no-op on a read-only store.
func (d *BlockDevice) Flush() error {
	if d.mode == ReadOnly {
		return nil
	}
	err := d.control(func(fd int) error {
		for {
			if err := unix.Fdatasync(fd); err != unix.EINTR {
				return err
			}
		}
	})
	return pathError("fdatasync", d.path, err)
}

// Unmap deallocates [off, off+length) so that it reads back as zeros.
// Whole sectors go to fallocate(PUNCH_HOLE|KEEP_SIZE), which the kernel
// turns into a write-zeroes-with-unmap command and which fails rather than
// leave stale data; where the device cannot do that, BLKZEROOUT writes
// zeros (the device may still deallocate). Partial sectors at the edges
// are zeroed by writing. BLKDISCARD alone (Discard) does not promise
// zeros on read, which UNMAP with LBPRZ needs.
func (d *BlockDevice) Unmap(off, length int64) error {
	if d.mode == ReadOnly {
		return readOnlyError("unmap", d.path)
	}
	if err := writeRange("unmap", off, length, d.size); err != nil {
		return err
	}
	mask := int64(d.sector - 1)
	a0 := (off + mask) &^ mask
	a1 := (off + length) &^ mask
	if a1 <= a0 {
		return d.zeroRange(off, length)
	}
	if err := d.zeroRange(off, a0-off); err != nil {
		return err
	}
	if err := d.zeroRange(a1, off+length-a1); err != nil {
		return err
	}
	if err := d.unmapAligned(a0, a1-a0); err != nil {
		return err
	}
	if d.mode == WriteThrough {
		return d.Flush()
	}
	return nil
}

func (d *BlockDevice) zeroRange(off, n int64) error {
	for n > 0 {
		c := min(n, int64(len(zeroBuf)))
		if _, err := d.WriteAt(zeroBuf[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

func (d *BlockDevice) unmapAligned(off, n int64) error {
	d.rmw.RLock()
	defer d.rmw.RUnlock()
	if !d.noPunch.Load() {
		err := d.control(func(fd int) error {
			return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		})
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.ENOSYS) {
			return pathError("fallocate", d.path, err)
		}
		d.noPunch.Store(true)
		d.log.Info("blockstore: device cannot punch holes, unmap uses BLKZEROOUT", "path", d.path)
	}
	return d.rangeIoctl("BLKZEROOUT", unix.BLKZEROOUT, off, n)
}

// Discard issues BLKDISCARD for [off, off+length), which must be aligned to
// the logical sector size. Unlike Unmap, what the range reads back as
// afterwards is up to the device.
func (d *BlockDevice) Discard(off, length int64) error {
	if d.mode == ReadOnly {
		return readOnlyError("discard", d.path)
	}
	if err := writeRange("discard", off, length, d.size); err != nil {
		return err
	}
	if (off|length)&int64(d.sector-1) != 0 {
		return fmt.Errorf("%w: discard of %d bytes at %d is not aligned to %d-byte sectors", ErrOutOfRange, length, off, d.sector)
	}
	d.rmw.RLock()
	defer d.rmw.RUnlock()
	return d.rangeIoctl("BLKDISCARD", unix.BLKDISCARD, off, length)
}

func (d *BlockDevice) rangeIoctl(name string, req uint, off, n int64) error {
	if n == 0 {
		return nil
	}
	r := [2]uint64{uint64(off), uint64(n)}
	err := d.control(func(fd int) error {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&r)))
		if errno != 0 {
			return errno
		}
		return nil
	})
	return pathError(name, d.path, err)
}

// Close flushes a writable store, then closes the device.
func (d *BlockDevice) Close() error {
	var ferr error
	if d.mode != ReadOnly {
		ferr = d.Flush()
	}
	cerr := d.f.Close()
	if ferr != nil && !errors.Is(ferr, os.ErrClosed) {
		return ferr
	}
	return cerr
}
