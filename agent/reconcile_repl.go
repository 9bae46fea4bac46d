package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/hatgt/hatgt/alua"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// replicated tells whether l is served through replication: a LUN created
// with more than one replica, on a node that runs the replication side.
func (r *reconciler) replicated(l cluster.DesiredLUN) bool {
	return r.repl != nil && l.Replicas > 1
}

// reconcileReplicated keeps this node's copy of replicated LUN l on the
// mirror (fenced at l's epoch) and exposes l on this node: through an
// owner Volume, opened in an epoch of this node's own, when this node owns
// l; in ALUA Standby otherwise, so multipath initiators keep a path here
// and move to it when this node takes over.
func (r *reconciler) reconcileReplicated(ctx context.Context, rt *runTarget, l cluster.DesiredLUN) error {
	// A copy that is not the one the cluster recorded (invariant 7: no
	// generation where one was recorded), or, for a LUN from before
	// identities, that this node held before and whose file had to be
	// created again, is lost: it must get a full copy before it counts
	// as in sync.
	lost := r.created[l.BackingPath] && r.repl.heldBefore(l.ID)
	delete(r.created, l.BackingPath)
	c, err := r.repl.attach(l, func() (Store, error) { return r.open(l) })
	if err != nil {
		return err
	}
	if (lost || r.repl.notRecorded(c, l)) && !r.repl.mirror.Lost(replication.LUNID(l.ID)) {
		r.repl.mirror.MarkLost(replication.LUNID(l.ID))
	}
	if !l.Owned && slices.Contains(l.InSync, r.nodeID) && r.repl.mirror.Lost(replication.LUNID(l.ID)) {
		// Say so in Raft at once (the owner would learn it only at its
		// next write to this copy); retried at every reconcile, since
		// the state may lag at start.
		if err := r.repl.coord.DropFromInSync(ctx, replication.LUNID(l.ID), l.Epoch, replication.NodeID(r.nodeID)); err != nil {
			r.log.Debug("recording the lost copy out of sync", "lun_id", l.ID, "err", err)
		}
	}
	r.repl.recordHeld(l.ID)
	n := l.LUN.LUN
	rl := rt.luns[n]
	if rl != nil && (rl.c != c || rl.sw == nil || !sameShape(rl.lun, l)) {
		r.log.Info("LUN changed, exposing it again", "target", rt.iqn, "lun", n)
		if err := r.stopLUN(rt, n); err != nil {
			r.log.Warn("stop LUN", "target", rt.iqn, "lun", n, "err", err)
		}
		rl = nil
	}
	if rl == nil {
		sw := &switchBackend{size: c.store.Size(), h: r.repl, c: c}
		groups := &alua.Groups{}
		groups.Set(portGroupsFor(r.stateNow(), l, r.nodeID, false))
		if rl, err = r.exposeLUNWith(rt, l, sw, c, groups); err != nil {
			return err
		}
		rl.sw, rl.groups = sw, groups
	}
	rl.lun = l

	var openErr error
	if l.Owned && r.repl.mirror.Lost(replication.LUNID(l.ID)) {
		// This node's copy is gone: it must not serve. Hand the LUN
		// to an in-sync copy; this one then gets a full copy.
		openErr = r.handOver(ctx, rt, l)
	} else if l.Owned && r.repl.isStopped(l.ID) {
		// A leave is handing it over: the deposed volume stays until the
		// state names the next owner (or the leave fails and resumes it).
	} else if l.Owned {
		v := rl.sw.volume()
		if v == nil || v.Serving() != nil || v.Epoch() != l.Epoch {
			if v != nil {
				r.log.Info("reopening replicated LUN in a new epoch", "target", rt.iqn, "lun", n, "why", servingWhy(v))
				if err := r.repl.closeVolume(c); err != nil {
					r.log.Warn("close volume", "target", rt.iqn, "lun", n, "err", err)
				}
				c.claimed = 0
			}
			// On success the switch backend serves the new volume.
			err := r.repl.open(ctx, c, l)
			switch {
			case errors.Is(err, replication.ErrWrongCopy):
				// Not the copy Raft recorded: never served. It is lost
				// (a full copy, once another copy owns the LUN).
				r.log.Warn("this node's copy is not the one the cluster recorded", "target", rt.iqn, "lun", n, "err", err)
				r.repl.mirror.MarkLost(replication.LUNID(l.ID))
				openErr = r.handOver(ctx, rt, l)
			case err != nil && !errors.Is(err, errClaimed) && !errors.Is(err, errStopped):
				openErr = err // errClaimed: the state change brings us back here
			}
		}
	} else if rl.sw.volume() != nil {
		r.log.Info("no longer owner of replicated LUN; standby", "target", rt.iqn, "lun", n, "owner", l.Owner)
		if err := r.repl.closeVolume(c); err != nil {
			r.log.Warn("close volume", "target", rt.iqn, "lun", n, "err", err)
		}
	}
	v := rl.sw.volume()
	serving := v != nil && v.Serving() == nil
	if rl.groups.Set(portGroupsFor(r.stateNow(), l, r.nodeID, serving)) {
		rl.lu.PortGroupsChanged()
	}
	return openErr
}

func servingWhy(v *replication.Volume) string {
	if err := v.Serving(); err != nil {
		return err.Error()
	}
	return "new epoch"
}

// stateNow returns the cluster state (nil before the node runs).
func (r *reconciler) stateNow() *cluster.State {
	if r.state == nil {
		return nil
	}
	return r.state()
}

// detachStale removes from the mirror every copy no longer placed on this
// node (r.copies holds those of the last reconcile); at shutdown, every
// copy, keeping the markers that the node holds them.
func (r *reconciler) detachStale(shutdown bool) error {
	if r.repl == nil {
		return nil
	}
	var errs []error
	for _, id := range r.repl.ids() {
		if !r.copies[id] {
			if !shutdown {
				r.log.Info("copy no longer placed here; closing it", "lun_id", id)
			}
			if err := r.repl.detach(id, !shutdown); err != nil {
				errs = append(errs, fmt.Errorf("copy of LUN %d: %w", id, err))
			}
		}
	}
	return errors.Join(errs...)
}

// handOver moves LUN l, whose copy on this node (its owner) was lost, to
// the first other in-sync copy on an alive node. Without one the LUN stays
// unserved: serving an empty copy would lose every acknowledged write.
// Once it is not the owner, this node drops its copy from the in-sync set
// (reconcileReplicated), so the LUN is not handed back to it.
func (r *reconciler) handOver(ctx context.Context, rt *runTarget, l cluster.DesiredLUN) error {
	st := r.stateNow()
	for _, id := range l.InSync {
		if id == r.nodeID || st == nil || st.Nodes[id] == nil || st.Nodes[id].Health != cluster.HealthAlive {
			continue
		}
		r.log.Warn("this node's copy of the LUN was lost (not the copy the cluster recorded: a blank or replaced disk, a file created again): handing the LUN over",
			"target", rt.iqn, "lun", l.LUN.LUN, "to", id)
		return r.repl.propose(ctx, l.Target, l.LUN.LUN, id, l.Epoch)
	}
	return fmt.Errorf("the owner's copy of LUN %d in %s is not the copy the cluster recorded (generation %s recorded; a blank or replaced disk, a file created again) and no other in-sync copy is alive: not serving it; put the right disk back, or bring an in-sync copy's node back",
		l.LUN.LUN, l.BackingPath, l.Generations[r.nodeID])
}
