package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/hatgt/hatgt/cluster"
)

// preparer is the node's cluster.Preparer: before the leader commits a new
// LUN with a copy here, it creates the copy's backing file (or checks the
// block device) and opens and closes it, with the functions the reconciler
// uses, so that a LUN this node cannot hold is refused with the reason.
// It remembers the files it created, by LUN ID, so that AbandonLUN
// removes those and never a file that was there before.
type preparer struct {
	log    *slog.Logger
	ensure func(l cluster.DesiredLUN) (created bool, err error)
	open   func(l cluster.DesiredLUN) (Store, error)

	mu      sync.Mutex
	created map[uint64]string // LUN ID -> the backing file PrepareLUN created
}

func newPreparer(log *slog.Logger, ensure func(cluster.DesiredLUN) (bool, error), open func(cluster.DesiredLUN) (Store, error)) *preparer {
	return &preparer{log: log, ensure: ensure, open: open, created: map[uint64]string{}}
}

// maxPrepared bounds the record of created files: a LUN committed after
// its prepare is never abandoned, so its entry would otherwise stay.
const maxPrepared = 1024

// PrepareLUN implements cluster.Preparer.
func (p *preparer) PrepareLUN(_ context.Context, l cluster.DesiredLUN) error {
	created, err := p.ensure(l)
	if err != nil {
		return err
	}
	s, err := p.open(l)
	if err != nil {
		if created {
			p.remove(l.BackingPath)
		}
		return err
	}
	if err := s.Close(); err != nil {
		if created {
			p.remove(l.BackingPath)
		}
		return fmt.Errorf("close %s: %w", l.BackingPath, err)
	}
	if created {
		p.mu.Lock()
		if len(p.created) >= maxPrepared {
			clear(p.created)
		}
		p.created[l.ID] = l.BackingPath
		p.mu.Unlock()
		p.log.Info("created the backing file of a LUN about to be created", "target", l.Target, "lun", l.LUN.LUN, "lun_id", l.ID, "path", l.BackingPath)
	}
	return nil
}

// AbandonLUN implements cluster.Preparer: it removes the file PrepareLUN
// created for l, if it did.
func (p *preparer) AbandonLUN(_ context.Context, l cluster.DesiredLUN) error {
	p.mu.Lock()
	path, ok := p.created[l.ID]
	if ok && path == l.BackingPath {
		delete(p.created, l.ID)
	}
	p.mu.Unlock()
	if !ok || path != l.BackingPath {
		return nil
	}
	p.log.Info("LUN not created after all: removing the backing file prepared for it", "target", l.Target, "lun", l.LUN.LUN, "lun_id", l.ID, "path", path)
	return p.remove(path)
}

func (p *preparer) remove(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		p.log.Warn("cannot remove a backing file created for a LUN that was not created", "path", path, "err", err)
		return err
	}
	return nil
}
