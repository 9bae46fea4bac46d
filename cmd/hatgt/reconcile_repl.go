package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// replicated tells whether l is served through replication: a LUN created
// with more than one replica, on a node that runs the replication side.
func (r *reconciler) replicated(l cluster.DesiredLUN) bool {
	return r.repl != nil && l.Replicas > 1
}

// reconcileReplicated keeps this node's copy of replicated LUN l on the
// mirror (fenced at l's epoch) and, when this node owns l, serves it
// through an owner Volume opened in an epoch of its own.
func (r *reconciler) reconcileReplicated(ctx context.Context, rt *runTarget, l cluster.DesiredLUN) error {
	c, err := r.repl.attach(l, func() (store, error) { return r.open(l) })
	if err != nil {
		return err
	}
	cur := rt.luns[l.LUN.LUN]
	if !l.Owned {
		if cur != nil {
			r.log.Info("no longer owner of replicated LUN; keeping the copy", "target", rt.iqn, "lun", l.LUN.LUN, "owner", l.Owner)
			return r.stopLUN(rt, l.LUN.LUN)
		}
		return nil
	}
	if cur != nil {
		if cur.c == c && sameLUN(cur.lun, l) && c.vol != nil && c.vol.Serving() == nil {
			return nil
		}
		why := "LUN changed"
		if c.vol != nil {
			if err := c.vol.Serving(); err != nil {
				why = err.Error()
			}
		}
		r.log.Info("reopening replicated LUN in a new epoch", "target", rt.iqn, "lun", l.LUN.LUN, "why", why)
		if err := r.stopLUN(rt, l.LUN.LUN); err != nil {
			r.log.Warn("stop LUN", "target", rt.iqn, "lun", l.LUN.LUN, "err", err)
		}
		c.claimed = 0
	}
	v, err := r.repl.open(ctx, c, l)
	if errors.Is(err, errClaimed) {
		return nil // the state change brings us back here
	}
	if err != nil {
		return err
	}
	return r.exposeLUN(rt, l, ownedVolume{Volume: v, h: r.repl, c: c}, c)
}

// detachStale removes from the mirror every copy no longer placed on this
// node (r.copies holds those of the last reconcile).
func (r *reconciler) detachStale() error {
	if r.repl == nil {
		return nil
	}
	var errs []error
	for _, id := range r.repl.ids() {
		if !r.copies[id] {
			r.log.Info("copy no longer placed here; closing it", "lun_id", id)
			if err := r.repl.detach(id); err != nil {
				errs = append(errs, fmt.Errorf("copy of LUN %d: %w", id, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ownedVolume is the store of a replicated LUN this node serves: the owner
// Volume. Closing it closes the Volume only; the copy's own store stays on
// the mirror.
type ownedVolume struct {
	*replication.Volume
	h *replicaHost
	c *replicaCopy
}

func (o ownedVolume) Close() error { return o.h.closeVolume(o.c) }
