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
	if c.suspect && rl.sw.volume() == nil {
		if done, err := r.suspectCopy(ctx, rt, c, l); !done {
			return err
		}
	}
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

// suspectCopy deals with this node's copy of write-back LUN l after a run
// that ended uncleanly across a reboot (runstate.go): the copy may lack
// writes that were acknowledged and held only in its cache, which the
// in-sync mirrors have. It must not serve them old, nor be promoted:
//
//   - as owner, it hands the LUN over to another in-sync copy on an alive
//     node, after giving its own copy a new generation (not the recorded
//     one): the new owner then finds a copy that is not the one recorded,
//     drops it and compares it region by region before it rejoins;
//   - as a mirror in sync, it does the same: a new generation, and it
//     drops itself from the in-sync set at once;
//   - when it is the only in-sync copy (no other alive), it is the best
//     copy there is: it is trusted as it is (with a warning).
//
// It reports done once the copy is no longer suspect; until then the
// caller serves nothing (err says why, and the next reconcile retries).
func (r *reconciler) suspectCopy(ctx context.Context, rt *runTarget, c *replicaCopy, l cluster.DesiredLUN) (done bool, err error) {
	if !slices.Contains(l.InSync, r.nodeID) {
		c.suspect = false // out of sync already: the owner compares or copies it
		return true, nil
	}
	st := r.stateNow()
	other := ""
	for _, id := range l.InSync {
		if id != r.nodeID && st != nil && st.Nodes[id] != nil && st.Nodes[id].Health == cluster.HealthAlive {
			other = id
			break
		}
	}
	if other == "" {
		if !l.Owned {
			return false, fmt.Errorf("LUN %d: this node's copy may have lost cached writes (power loss) and no other in-sync copy is alive yet", l.LUN.LUN)
		}
		r.log.Warn("this node's copy may have lost writes its cache held at a power loss, but no other in-sync copy is alive: serving it as it is",
			"target", rt.iqn, "lun", l.LUN.LUN)
		c.suspect = false
		return true, nil
	}
	if rec := l.Generations[r.nodeID]; rec != "" && genName(c.store.Generation()) == rec {
		if err := c.store.SetGeneration(replication.NewGeneration()); err != nil {
			return false, fmt.Errorf("LUN %d: marking the suspect copy: %w", l.LUN.LUN, err)
		}
	}
	if l.Owned {
		r.log.Warn("this node's copy may have lost writes its cache held at a power loss: handing the LUN to an in-sync copy, which compares this one",
			"target", rt.iqn, "lun", l.LUN.LUN, "to", other)
		if err := r.repl.propose(ctx, l.Target, l.LUN.LUN, other, l.Epoch); err != nil {
			return false, fmt.Errorf("LUN %d: handing over a suspect copy: %w", l.LUN.LUN, err)
		}
		return false, nil // the state change brings the LUN back here as a mirror
	}
	if err := r.repl.coord.DropFromInSync(ctx, replication.LUNID(l.ID), l.Epoch, replication.NodeID(r.nodeID)); err != nil {
		return false, fmt.Errorf("LUN %d: recording the suspect copy out of sync: %w", l.LUN.LUN, err)
	}
	r.log.Warn("this node's copy may have lost writes its cache held at a power loss: out of sync until the owner compared it",
		"target", rt.iqn, "lun", l.LUN.LUN)
	c.suspect = false
	return true, nil
}
