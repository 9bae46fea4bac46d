package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hatgt/hatgt/blockstore"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
	"github.com/hatgt/hatgt/scsi"
)

// Store is a LUN's backing store as the node opens it: a scsi.Backend
// (blockstore.File, blockstore.BlockDevice, or in tests blockstore.Crash)
// that the node closes when it stops serving the LUN.
//
// A replicated LUN's store (more than one replica) holds BackingSize(l)
// bytes: the LUN's data, then its copy's identity block
// (replication.IdentitySize bytes, DESIGN.md invariant 7). The node reads
// and writes the block through the store's own ReadAt, WriteAt (or
// WriteAtFUA) and Flush, so any Store serves, an in-memory one too, if
// Size reports all of it, a read past the LUN's data returns what was last
// written there (zeros at first), and Flush (or WriteAtFUA) makes it
// durable. Only the LUN's data is exposed to initiators.
type Store interface {
	scsi.Backend
	Close() error
}

// BackingSize is the size of the store of LUN l on a node: the LUN's size,
// plus replication.IdentitySize for a replicated LUN (its copy's identity
// block follows the data). Deps.OpenStore must return stores of this size.
func BackingSize(l cluster.DesiredLUN) int64 {
	if l.LUN.Replicas > 1 {
		return int64(l.LUN.Size) + replication.IdentitySize
	}
	return int64(l.LUN.Size)
}

// EnsureBacking makes sure a fileio LUN's file exists with BackingSize(l)
// bytes (created sparse when missing: created says so). A replicated LUN's
// file from before copy identities, of exactly the LUN's size, is grown by
// the identity block (sparse, so the block reads zeros: a copy without an
// identity, compared in full before it counts as in sync). A block device
// must exist already. It is the default Deps.EnsureBacking.
func EnsureBacking(l cluster.DesiredLUN) (created bool, err error) {
	if l.LUN.Backing == cluster.BackingBlock {
		st, err := os.Stat(l.BackingPath)
		switch {
		case os.IsNotExist(err):
			return false, fmt.Errorf("no block device %s on this node: give --path a device that exists on every node of the LUN's placement (ls -l /dev/disk/by-id/)", l.BackingPath)
		case err != nil:
			return false, fmt.Errorf("block device: %w", err)
		case st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0:
			return false, fmt.Errorf("%s is not a block device (%v): a blockio LUN needs one; for a file use --type fileio", l.BackingPath, st.Mode().Type())
		}
		return false, nil
	}
	want := BackingSize(l)
	if st, err := os.Stat(l.BackingPath); err == nil {
		switch {
		case !st.Mode().IsRegular() || st.Size() == want:
			return false, nil
		case want > int64(l.LUN.Size) && st.Size() == int64(l.LUN.Size) && l.LUN.IOMode != cluster.IOModeReadOnly:
			s, err := blockstore.OpenFile(l.BackingPath, blockstore.Options{Size: want, Mode: blockstore.WriteBack, Grow: true})
			if err != nil {
				return false, fmt.Errorf("adding the copy's identity block to %s: %w", l.BackingPath, err)
			}
			return false, s.Close()
		}
		extra := want - int64(l.LUN.Size) // the identity block, if any
		return false, fmt.Errorf("%s is %d bytes, not the LUN's %d%s: hatgt does not resize an existing LUN file: bring the file back to %d bytes, or create the LUN with --size %d (the file's size%s) or another --path",
			l.BackingPath, st.Size(), l.LUN.Size, identityNote(l), want, max(st.Size()-extra, 0), lessNote(extra))
	}
	if l.LUN.IOMode == cluster.IOModeReadOnly {
		return false, fmt.Errorf("%s does not exist, and a read-only LUN is never created", l.BackingPath)
	}
	if err := os.MkdirAll(filepath.Dir(l.BackingPath), 0o750); err != nil {
		return false, err
	}
	s, err := blockstore.OpenFile(l.BackingPath, blockstore.Options{Size: want, Mode: blockstore.WriteBack, Create: true})
	if err != nil {
		// The file did not exist: whatever the open left (an empty file
		// whose sizing failed) goes, so that the next try reports this
		// error again, not "0 bytes, not the LUN's size".
		if rmErr := os.Remove(l.BackingPath); rmErr != nil && !os.IsNotExist(rmErr) {
			return false, fmt.Errorf("%w (and removing the file it left failed: %v)", backingError(l, err), rmErr)
		}
		return false, backingError(l, err)
	}
	return true, s.Close()
}

// lessNote says a suggested size leaves out the identity block.
func lessNote(extra int64) string {
	if extra > 0 {
		return fmt.Sprintf(" less %d for the copy's identity block", extra)
	}
	return ""
}

// identityNote names the identity block in a size message about l.
func identityNote(l cluster.DesiredLUN) string {
	if BackingSize(l) > int64(l.LUN.Size) {
		return fmt.Sprintf(" plus %d for the copy's identity block", replication.IdentitySize)
	}
	return ""
}

// backingError adds to a failure to create l's file what to do about it.
func backingError(l cluster.DesiredLUN, err error) error {
	switch {
	case errors.Is(err, syscall.EFBIG):
		return fmt.Errorf("%w: the file system of %s cannot hold a file of %s: choose a smaller --size, or a --path on a file system that can",
			err, filepath.Dir(l.BackingPath), cluster.FormatSize(l.LUN.Size))
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: hatgt on this node may not create files in %s: choose another --path, or give it the right", err, filepath.Dir(l.BackingPath))
	}
	return err
}

// OpenStore opens the backing store of a LUN placed on this node: its file
// or block device, in the LUN's IO mode, BackingSize(l) bytes of it. It is
// the default Deps.OpenStore.
func OpenStore(l cluster.DesiredLUN, log *slog.Logger) (Store, error) {
	mode, err := blockstore.ParseMode(l.LUN.IOMode)
	if err != nil {
		return nil, err
	}
	opts := blockstore.Options{Mode: mode, Size: BackingSize(l), Logger: log}
	if l.LUN.Backing == cluster.BackingBlock {
		s, err := blockstore.OpenBlockDevice(l.BackingPath, opts)
		if errors.Is(err, blockstore.ErrSize) && opts.Size > int64(l.LUN.Size) {
			return nil, fmt.Errorf("%w: a replicated LUN keeps its copy's identity block in the %d bytes after its data: make the LUN at most the device's size minus %d, or use a larger device",
				err, replication.IdentitySize, replication.IdentitySize)
		}
		return s, err
	}
	return blockstore.OpenFile(l.BackingPath, opts)
}
