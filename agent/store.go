package agent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

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
		if _, err := os.Stat(l.BackingPath); err != nil {
			return false, fmt.Errorf("block device: %w", err)
		}
		return false, nil
	}
	if st, err := os.Stat(l.BackingPath); err == nil {
		if !st.Mode().IsRegular() || st.Size() == int64(l.LUN.Size) {
			return false, nil
		}
		return false, fmt.Errorf("%s is %d bytes, not the LUN's %d: hatgt does not resize an existing LUN file", l.BackingPath, st.Size(), l.LUN.Size)
	}
	if l.LUN.IOMode == cluster.IOModeReadOnly {
		return false, fmt.Errorf("%s does not exist, and a read-only LUN is never created", l.BackingPath)
	}
	if err := os.MkdirAll(filepath.Dir(l.BackingPath), 0o750); err != nil {
		return false, err
	}
	s, err := blockstore.OpenFile(l.BackingPath, blockstore.Options{Size: int64(l.LUN.Size), Mode: blockstore.WriteBack, Create: true})
	if err != nil {
		return false, err
	}
	return true, s.Close()
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
