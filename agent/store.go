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
	"github.com/hatgt/hatgt/scsi"
)

// Store is a LUN's backing store as the node opens it: a scsi.Backend
// (blockstore.File, blockstore.BlockDevice, or in tests blockstore.Crash)
// that the node closes when it stops serving the LUN.
type Store interface {
	scsi.Backend
	Close() error
}

// EnsureBacking makes sure a fileio LUN's file exists with the LUN's size
// (created sparse when missing: created says so). A block device must
// exist already. It is the default Deps.EnsureBacking.
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
	if st, err := os.Stat(l.BackingPath); err == nil {
		if !st.Mode().IsRegular() || st.Size() == int64(l.LUN.Size) {
			return false, nil
		}
		return false, fmt.Errorf("%s is %d bytes, not the LUN's %d: hatgt does not resize an existing LUN file: bring the file back to %d bytes, or create the LUN with --size %d (the file's size) or another --path",
			l.BackingPath, st.Size(), l.LUN.Size, l.LUN.Size, st.Size())
	}
	if l.LUN.IOMode == cluster.IOModeReadOnly {
		return false, fmt.Errorf("%s does not exist, and a read-only LUN is never created", l.BackingPath)
	}
	if err := os.MkdirAll(filepath.Dir(l.BackingPath), 0o750); err != nil {
		return false, err
	}
	s, err := blockstore.OpenFile(l.BackingPath, blockstore.Options{Size: int64(l.LUN.Size), Mode: blockstore.WriteBack, Create: true})
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
// or block device, in the LUN's IO mode. It is the default Deps.OpenStore.
func OpenStore(l cluster.DesiredLUN, log *slog.Logger) (Store, error) {
	mode, err := blockstore.ParseMode(l.LUN.IOMode)
	if err != nil {
		return nil, err
	}
	opts := blockstore.Options{Mode: mode, Size: int64(l.LUN.Size), Logger: log}
	if l.LUN.Backing == cluster.BackingBlock {
		return blockstore.OpenBlockDevice(l.BackingPath, opts)
	}
	return blockstore.OpenFile(l.BackingPath, opts)
}
