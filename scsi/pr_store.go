package scsi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// MemoryReservationStore is a ReservationStore that lives in memory: the
// state is lost when the process ends, whatever APTPL says.
type MemoryReservationStore struct {
	mu    sync.Mutex              // serialises Updates
	state atomic.Pointer[PRState] // immutable snapshot; replaced on every Update
}

// NewMemoryReservationStore returns an empty in-memory store.
func NewMemoryReservationStore() *MemoryReservationStore {
	m := &MemoryReservationStore{}
	m.state.Store(&PRState{})
	return m
}

// Load returns the current snapshot without locking.
func (m *MemoryReservationStore) Load() (*PRState, error) { return m.state.Load(), nil }

// Update applies fn to a copy of the state and installs it if fn succeeds.
func (m *MemoryReservationStore) Update(fn func(*PRState) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := m.state.Load().Clone()
	if err := fn(next); err != nil {
		return err
	}
	m.state.Store(next)
	return nil
}

// FileReservationStore is a ReservationStore kept in one file so that the
// registrations and the reservation survive a restart when the last
// REGISTER set APTPL=1 (SPC-4 5.13.5). When APTPL is 0 the file is not
// rewritten on every change (only when it must drop a persisted state),
// and a state found with APTPL=0 at open is discarded, as after a power
// loss. The file is replaced atomically: write a temporary file, fsync
// it, rename it over the old one, fsync the directory.
type FileReservationStore struct {
	path string

	mu        sync.Mutex // serialises Updates
	state     atomic.Pointer[PRState]
	persisted bool // the file holds a state with APTPL=1
}

// prFileFormat is the version of the file encoding.
const prFileFormat = 1

// prFile is what the file holds: a versioned envelope around PRState
// (encoding/json writes struct fields in declaration order, so the
// encoding of a state is deterministic).
type prFile struct {
	Format int      `json:"format"`
	State  *PRState `json:"state"`
}

// NewFileReservationStore opens (or starts) the store kept in path. The
// directory must exist.
func NewFileReservationStore(path string) (*FileReservationStore, error) {
	s := &FileReservationStore{path: path}
	s.state.Store(&PRState{})
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("scsi: reservation store: %w", err)
	}
	var f prFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("scsi: reservation store %s: %w", path, err)
	}
	if f.Format != prFileFormat || f.State == nil {
		return nil, fmt.Errorf("scsi: reservation store %s: unsupported format %d", path, f.Format)
	}
	if f.State.APTPL {
		f.State.Events = nil // meant for nexuses of the previous run
		s.state.Store(f.State)
		s.persisted = true
	}
	return s, nil
}

// PersistsThroughPowerLoss reports that APTPL=1 is honoured.
func (s *FileReservationStore) PersistsThroughPowerLoss() bool { return true }

// Load returns the current snapshot without locking.
func (s *FileReservationStore) Load() (*PRState, error) { return s.state.Load(), nil }

// Update applies fn to a copy of the state and installs it if fn succeeds
// (and, when APTPL is or was set, once the file holds it).
func (s *FileReservationStore) Update(fn func(*PRState) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.state.Load().Clone()
	if err := fn(next); err != nil {
		return err
	}
	if next.APTPL || s.persisted {
		if err := s.write(next); err != nil {
			return err
		}
		s.persisted = next.APTPL
	}
	s.state.Store(next)
	return nil
}

// write replaces the file with st.
func (s *FileReservationStore) write(st *PRState) error {
	b, err := json.Marshal(prFile{Format: prFileFormat, State: st})
	if err != nil {
		return fmt.Errorf("scsi: reservation store: %w", err)
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, filepath.Base(s.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("scsi: reservation store: %w", err)
	}
	name := tmp.Name()
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(name, s.path)
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("scsi: reservation store: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("scsi: reservation store: sync dir: %w", err)
		}
	}
	return nil
}
