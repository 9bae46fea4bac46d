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

func (b *switchBackend) volume() *replication.Volume { return b.c.volume() }
func (b *switchBackend) Size() int64                 { return b.size }
func (b *switchBackend) ErrorKind(err error) scsi.BackendErrorKind {
	return (*replication.Volume)(nil).ErrorKind(err)
}

// errLeaseEnded answers IO once the owner lease the volume was opened under
// ended (a stall, a cut from the Raft leader): the volume never serves
// again; the node claims a new epoch first if it still owns the LUN.
var errLeaseEnded = fmt.Errorf("%w: the owner lease ended (no contact with the Raft leader in time)", replication.ErrNotOwner)

// serving returns the owner volume when this node may serve through it
// now: a volume is open and the lease it was opened under still holds
// (checked on the node's clock at every command, so a command that waited
// through a stall is refused). A volume whose lease ended is deposed.
func (b *switchBackend) serving() (*replication.Volume, error) {
	o := b.c.vol.Load()
	if o == nil {
		return nil, errStandby
	}
	if !skipLeaseCheck && !b.h.leaseValid(o.leaseGen) {
		o.Depose(errLeaseEnded)
		return nil, errLeaseEnded
	}
	return o.Volume, nil
}

// Every command holds the copy's io lock (read side) for its whole run:
// a leave's StopServing waits for the commands in flight (handover.go).

// ReadAt reads the owner's copy. The lease is checked again after the
// read: the data returned was read while this node was still the owner,
// so no write acknowledged by a later owner can be older than it.
func (b *switchBackend) ReadAt(p []byte, off int64) (int, error) {
	b.c.io.RLock()
	defer b.c.io.RUnlock()
	v, err := b.serving()
	if err != nil {
		return 0, err
	}
	n, err := v.ReadAt(p, off)
	if err != nil {
		return n, err
	}
	if _, err := b.serving(); err != nil {
		return 0, err
	}
	return n, nil
}

func (b *switchBackend) WriteAt(p []byte, off int64) (int, error) {
	b.c.io.RLock()
	defer b.c.io.RUnlock()
	v, err := b.serving()
	if err != nil {
		return 0, err
	}
	n, err := v.WriteAt(p, off)
	b.wrote(v, err, off, p)
	return n, err
}

func (b *switchBackend) WriteAtFUA(p []byte, off int64) (int, error) {
	b.c.io.RLock()
	defer b.c.io.RUnlock()
	v, err := b.serving()
	if err != nil {
		return 0, err
	}
	n, err := v.WriteAtFUA(p, off)
	b.wrote(v, err, off, p)
	return n, err
}

func (b *switchBackend) Unmap(off, length int64) error {
	b.c.io.RLock()
	defer b.c.io.RUnlock()
	v, err := b.serving()
	if err != nil {
		return err
	}
	err = v.Unmap(off, length)
	b.wrote(v, err, off, nil)
	return err
}

// MappedExtent implements scsi.ExtentMapper (GET LBA STATUS, and the
// deallocation a SANITIZE BLOCK ERASE or an UNMAP leaves) from the
// owner's copy.
func (b *switchBackend) MappedExtent(off int64) (bool, int64, error) {
	b.c.io.RLock()
	defer b.c.io.RUnlock()
	v, err := b.serving()
	if err != nil {
		return false, 0, err
	}
	return v.MappedExtent(off)
}

// wrote reports an acknowledged write to Deps.WriteHook.
func (b *switchBackend) wrote(v *replication.Volume, err error, off int64, p []byte) {
	if err == nil && b.h.writeHook != nil {
		b.h.writeHook(b.c.id, v.Epoch(), off, p)
	}
}

// Flush flushes the owner's copies; on standby there is nothing this LU
// wrote (the mirror flushes its copy when asked, or when it is closed).
func (b *switchBackend) Flush() error {
	b.c.io.RLock()
	defer b.c.io.RUnlock()
	if b.volume() == nil {
		return nil
	}
	v, err := b.serving()
	if err != nil {
		return err
	}
	return v.Flush()
}

// Close closes the Volume, if any; the copy stays on the mirror.
func (b *switchBackend) Close() error { return b.h.closeVolume(b.c) }
