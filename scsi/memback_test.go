package scsi

import (
	"bytes"
	"io"
	"sync"
)

// memBackend is an in-memory Backend for tests. It counts flushes and can
// be told to fail writes with an error.
type memBackend struct {
	mu       sync.Mutex
	data     []byte
	mapped   []bool // per 512-byte sector; false = deallocated
	flushes  int
	writeErr error
}

func newMemBackend(size int64) *memBackend {
	return &memBackend{data: make([]byte, size), mapped: make([]bool, size/512)}
}

func (m *memBackend) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memBackend) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.writeErr != nil {
		return 0, m.writeErr
	}
	if off+int64(len(p)) > int64(len(m.data)) {
		return 0, io.ErrShortWrite
	}
	copy(m.data[off:], p)
	for s := off / 512; s < (off+int64(len(p))+511)/512; s++ {
		m.mapped[s] = true
	}
	return len(p), nil
}

func (m *memBackend) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushes++
	return nil
}

func (m *memBackend) Size() int64 { return int64(len(m.data)) }

func (m *memBackend) Unmap(off, length int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:off+length], make([]byte, length))
	for s := off / 512; s < (off+length)/512; s++ {
		m.mapped[s] = false
	}
	return nil
}

func (m *memBackend) MappedExtent(off int64) (bool, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := off / 512
	if s >= int64(len(m.mapped)) {
		return false, 0, io.EOF
	}
	state := m.mapped[s]
	e := s
	for e < int64(len(m.mapped)) && m.mapped[e] == state {
		e++
	}
	return state, (e - s) * 512, nil
}

// bytesAt returns a copy of the backend's bytes.
func (m *memBackend) bytesAt(off, n int64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.data[off : off+n])
}
