package blockstore

import (
	"fmt"
	"sync"
)

// Crash is an in-memory store that models a disk with a volatile write
// cache, for tests that must prove no acknowledged write is lost. It keeps
// two images: what readers see now, and what would survive a power cut.
// A write or unmap changes only the first; Flush makes everything written so
// far durable; WriteAtFUA makes its own bytes durable at once; Crash throws
// away everything not yet durable, exactly as a power cut would.
//
// Crash is safe for concurrent use.
type Crash struct {
	mu      sync.Mutex
	cur     *sparse            // what reads see
	durable *sparse            // what survives Crash
	dirty   map[int64]struct{} // chunks where cur and durable may differ
	stats   CrashStats
	fault   Fault
}

// Fault decides whether an operation on a Crash store fails: it is called
// with the operation ("read", "write", "writefua", "unmap" or "flush") and
// its byte range (0, 0 for flush) before the operation runs; a non-nil
// error is returned to the caller and the store is left unchanged. Faults
// let tests inject a full disk (an error wrapping syscall.ENOSPC), a
// medium error (syscall.EIO) or a failed flush, by operation and offset.
type Fault func(op string, off, length int64) error

// SetFault installs f (nil removes it). f runs under the store's lock, so
// it must not call back into the store.
func (c *Crash) SetFault(f Fault) {
	c.mu.Lock()
	c.fault = f
	c.mu.Unlock()
}

// check runs the fault hook; the caller holds c.mu.
func (c *Crash) check(op string, off, n int64) error {
	if c.fault == nil {
		return nil
	}
	return c.fault(op, off, n)
}

// CrashStats counts calls, so tests can check a layer above flushed.
type CrashStats struct {
	Writes, FUAWrites, Unmaps, Flushes, Crashes int
}

// NewCrash returns an all-zero store of size bytes with nothing unflushed.
func NewCrash(size int64) *Crash {
	size = max(size, 0)
	return &Crash{cur: newSparse(size), durable: newSparse(size), dirty: make(map[int64]struct{})}
}

// Size returns the capacity in bytes.
func (c *Crash) Size() int64 { return c.cur.size }

// ReadAt implements io.ReaderAt over the current (possibly unflushed) image.
func (c *Crash) ReadAt(p []byte, off int64) (int, error) {
	n, err := readRange(off, len(p), c.cur.size)
	if n > 0 {
		c.mu.Lock()
		defer c.mu.Unlock()
		if ferr := c.check("read", off, int64(n)); ferr != nil {
			return 0, ferr
		}
		c.cur.readAt(p[:n], off)
	}
	return n, err
}

func (c *Crash) markDirty(off, n int64) {
	chunkSpan(off, n, func(idx int64, _, _ int, _ int64) { c.dirty[idx] = struct{}{} })
}

// WriteAt writes p at off; it is lost by Crash unless flushed first.
func (c *Crash) WriteAt(p []byte, off int64) (int, error) {
	if err := writeRange("write", off, int64(len(p)), c.cur.size); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	c.cur.writeAt(p, off)
	c.markDirty(off, int64(len(p)))
	c.stats.Writes++
	return len(p), nil
}

// WriteAtFUA writes p at off and makes these bytes durable before it
// returns. Other unflushed writes stay unflushed: a later Crash keeps this
// write's bytes and drops theirs.
func (c *Crash) WriteAtFUA(p []byte, off int64) (int, error) {
	if err := writeRange("write", off, int64(len(p)), c.cur.size); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check("writefua", off, int64(len(p))); err != nil {
		return 0, err
	}
	c.cur.writeAt(p, off)
	c.durable.writeAt(p, off)
	c.stats.FUAWrites++
	return len(p), nil
}

// Unmap deallocates [off, off+length); like a write it is volatile until
// flushed.
func (c *Crash) Unmap(off, length int64) error {
	if err := writeRange("unmap", off, length, c.cur.size); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check("unmap", off, length); err != nil {
		return err
	}
	c.cur.unmap(off, length)
	c.markDirty(off, length)
	c.stats.Unmaps++
	return nil
}

// MappedExtent reports the mapping of the current image.
func (c *Crash) MappedExtent(off int64) (bool, int64, error) {
	if off < 0 || off >= c.cur.size {
		return false, 0, fmt.Errorf("%w: extent at offset %d (size %d)", ErrOutOfRange, off, c.cur.size)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	mapped, n := c.cur.extent(off)
	return mapped, n, nil
}

// Flush makes every completed write and unmap durable.
func (c *Crash) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check("flush", 0, 0); err != nil {
		return err
	}
	for idx := range c.dirty {
		copyChunk(c.durable, c.cur, idx)
	}
	clear(c.dirty)
	c.stats.Flushes++
	return nil
}

// Crash simulates a power cut: every write and unmap since the last Flush
// (except FUA writes) is forgotten and reads return the durable image.
func (c *Crash) Crash() {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Only dirty chunks can differ: every other chunk was last changed by
	// a FUA write (applied to both images) or before the last Flush.
	for idx := range c.dirty {
		copyChunk(c.cur, c.durable, idx)
	}
	clear(c.dirty)
	c.stats.Crashes++
}

// Unflushed reports whether anything written is not yet durable.
func (c *Crash) Unflushed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for idx := range c.dirty {
		if !chunkEqual(c.cur, c.durable, idx) {
			return true
		}
	}
	return false
}

// Stats returns the call counters.
func (c *Crash) Stats() CrashStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func chunkEqual(a, b *sparse, idx int64) bool {
	ca, oka := a.chunks[idx]
	cb, okb := b.chunks[idx]
	if oka != okb {
		return false
	}
	return !oka || string(ca) == string(cb)
}
