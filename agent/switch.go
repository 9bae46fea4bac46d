package agent

import (
	"fmt"

	"github.com/hatgt/hatgt/replication"
	"github.com/hatgt/hatgt/scsi"
)

// errStandby answers IO on a node that does not own the LUN (the ALUA gate
// refuses it before; this covers the moment ownership changes).
var errStandby = fmt.Errorf("%w: this node does not serve the LUN as its owner", replication.ErrNotOwner)

// switchBackend is the backend of a replicated LUN's LU: the owner Volume
// of copy c while this node serves the LUN, nothing (standby) otherwise.
// The LU stays the same across owner changes, so sessions keep their nexus
// and get ASYMMETRIC ACCESS STATE CHANGED instead of a vanished LUN.
type switchBackend struct {
	size int64
	h    *replicaHost
	c    *replicaCopy
}

var (
	_ scsi.Backend               = (*switchBackend)(nil)
	_ scsi.Unmapper              = (*switchBackend)(nil)
	_ scsi.ForceUnitAccessWriter = (*switchBackend)(nil)
	_ scsi.ErrorKinder           = (*switchBackend)(nil)
)

func (b *switchBackend) volume() *replication.Volume { return b.c.vol.Load() }
func (b *switchBackend) Size() int64                 { return b.size }
func (b *switchBackend) ErrorKind(err error) scsi.BackendErrorKind {
	return (*replication.Volume)(nil).ErrorKind(err)
}

func (b *switchBackend) ReadAt(p []byte, off int64) (int, error) {
	if v := b.volume(); v != nil {
		return v.ReadAt(p, off)
	}
	return 0, errStandby
}

func (b *switchBackend) WriteAt(p []byte, off int64) (int, error) {
	if v := b.volume(); v != nil {
		return v.WriteAt(p, off)
	}
	return 0, errStandby
}

func (b *switchBackend) WriteAtFUA(p []byte, off int64) (int, error) {
	if v := b.volume(); v != nil {
		return v.WriteAtFUA(p, off)
	}
	return 0, errStandby
}

func (b *switchBackend) Unmap(off, length int64) error {
	if v := b.volume(); v != nil {
		return v.Unmap(off, length)
	}
	return errStandby
}

// Flush flushes the owner's copies; on standby there is nothing this LU
// wrote (the mirror flushes its copy when asked, or when it is closed).
func (b *switchBackend) Flush() error {
	if v := b.volume(); v != nil {
		return v.Flush()
	}
	return nil
}

// Close closes the Volume, if any; the copy stays on the mirror.
func (b *switchBackend) Close() error { return b.h.closeVolume(b.c) }
