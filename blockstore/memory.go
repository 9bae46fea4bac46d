package blockstore

import (
	"fmt"
	"sync"
)

// memGrain is the allocation unit of the memory stores: a chunk is mapped
// once any byte of it is written, and unmapped only when an Unmap covers it
// whole (a partial Unmap zeroes bytes, as a filesystem punching a hole in
// part of a block does).
const memGrain = 4096

// sparse is an unsynchronised sparse byte array of a fixed size, the data of
// Memory and both images of Crash.
type sparse struct {
	size   int64
	chunks map[int64][]byte // chunk index -> memGrain bytes
}

func newSparse(size int64) *sparse {
	return &sparse{size: size, chunks: make(map[int64][]byte)}
}

// chunkSpan calls fn for every chunk overlapping [off, off+n) with the
// chunk index, the byte range inside the chunk and the position in the
// caller's buffer.
func chunkSpan(off, n int64, fn func(idx int64, lo, hi int, pos int64)) {
	for pos := int64(0); pos < n; {
		abs := off + pos
		idx := abs / memGrain
		lo := int(abs % memGrain)
		hi := memGrain
		if rest := n - pos; int64(hi-lo) > rest {
			hi = lo + int(rest)
		}
		fn(idx, lo, hi, pos)
		pos += int64(hi - lo)
	}
}

// readAt copies [off, off+len(p)) into p; the range must be in bounds.
func (s *sparse) readAt(p []byte, off int64) {
	chunkSpan(off, int64(len(p)), func(idx int64, lo, hi int, pos int64) {
		dst := p[pos : pos+int64(hi-lo)]
		if c, ok := s.chunks[idx]; ok {
			copy(dst, c[lo:hi])
		} else {
			clear(dst)
		}
	})
}

// writeAt copies p to off; the range must be in bounds.
func (s *sparse) writeAt(p []byte, off int64) {
	chunkSpan(off, int64(len(p)), func(idx int64, lo, hi int, pos int64) {
		c, ok := s.chunks[idx]
		if !ok {
			c = make([]byte, memGrain)
			s.chunks[idx] = c
		}
		copy(c[lo:hi], p[pos:])
	})
}

// unmap drops whole chunks in [off, off+n) and zeroes partial ones.
func (s *sparse) unmap(off, n int64) {
	chunkSpan(off, n, func(idx int64, lo, hi int, _ int64) {
		c, ok := s.chunks[idx]
		if !ok {
			return
		}
		// The last chunk may be short when size is not a multiple of
		// memGrain: covering up to the end of the store covers it whole.
		end := memGrain
		if tail := s.size - idx*memGrain; tail < memGrain {
			end = int(tail)
		}
		if lo == 0 && hi >= end {
			delete(s.chunks, idx)
			return
		}
		clear(c[lo:hi])
	})
}

// extent reports whether off is mapped and how many bytes from off share
// that state, up to the end of the store.
func (s *sparse) extent(off int64) (bool, int64) {
	idx := off / memGrain
	_, mapped := s.chunks[idx]
	end := (idx + 1) * memGrain
	for end < s.size {
		if _, ok := s.chunks[end/memGrain]; ok != mapped {
			break
		}
		end += memGrain
	}
	return mapped, min(end, s.size) - off
}

// copyChunk makes chunk idx of dst equal to that of src (mapped or not).
func copyChunk(dst, src *sparse, idx int64) {
	c, ok := src.chunks[idx]
	if !ok {
		delete(dst.chunks, idx)
		return
	}
	d, ok := dst.chunks[idx]
	if !ok {
		d = make([]byte, memGrain)
		dst.chunks[idx] = d
	}
	copy(d, c)
}

// mappedBytes counts allocated bytes, for tests and stats.
func (s *sparse) mappedBytes() int64 { return int64(len(s.chunks)) * memGrain }

// Memory is a sparse in-memory store for tests and demos. It is safe for
// concurrent use. Flush does nothing: memory is as durable as it gets.
type Memory struct {
	mu       sync.RWMutex
	data     *sparse
	readOnly bool
}

// NewMemory returns an all-zero, fully unmapped store of size bytes. A
// negative size is treated as zero.
func NewMemory(size int64) *Memory {
	return &Memory{data: newSparse(max(size, 0))}
}

// SetReadOnly switches the store to read-only (writes and unmaps fail with
// an error wrapping syscall.EROFS) or back.
func (m *Memory) SetReadOnly(ro bool) {
	m.mu.Lock()
	m.readOnly = ro
	m.mu.Unlock()
}

// Size returns the capacity in bytes.
func (m *Memory) Size() int64 { return m.data.size }

// ReadAt implements io.ReaderAt.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	n, err := readRange(off, len(p), m.data.size)
	if n > 0 {
		m.mu.RLock()
		m.data.readAt(p[:n], off)
		m.mu.RUnlock()
	}
	return n, err
}

// WriteAt writes p at off; a write beyond Size is refused whole.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	if err := writeRange("write", off, int64(len(p)), m.data.size); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return 0, readOnlyError("write", "memory")
	}
	m.data.writeAt(p, off)
	return len(p), nil
}

// WriteAtFUA is WriteAt: memory has no volatile cache.
func (m *Memory) WriteAtFUA(p []byte, off int64) (int, error) { return m.WriteAt(p, off) }

// Flush does nothing.
func (m *Memory) Flush() error { return nil }

// Unmap deallocates [off, off+length): it reads back as zeros.
func (m *Memory) Unmap(off, length int64) error {
	if err := writeRange("unmap", off, length, m.data.size); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.readOnly {
		return readOnlyError("unmap", "memory")
	}
	m.data.unmap(off, length)
	return nil
}

// MappedExtent reports whether the byte at off is allocated and how many
// bytes from off share that state.
func (m *Memory) MappedExtent(off int64) (bool, int64, error) {
	if off < 0 || off >= m.data.size {
		return false, 0, fmt.Errorf("%w: extent at offset %d (size %d)", ErrOutOfRange, off, m.data.size)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	mapped, n := m.data.extent(off)
	return mapped, n, nil
}

// MappedBytes returns how many bytes are allocated (a multiple of 4 KiB).
func (m *Memory) MappedBytes() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.data.mappedBytes()
}
