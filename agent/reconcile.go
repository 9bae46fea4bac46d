package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/hatgt/hatgt/alua"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
	"github.com/hatgt/hatgt/scsi"
	"github.com/hatgt/hatgt/target"
)

// targetServer is the part of *target.Server the reconciler drives.
type targetServer interface {
	AddTarget(tc target.TargetConfig) error
	RemoveTarget(name string) error
}

// reconciler keeps the iSCSI targets and LUNs of a cluster node equal to
// the state machine's desired state for the node (cluster.Reconciler):
//
//   - every target of the cluster runs here (each node is a target port
//     group of every target), with the ACL and CHAP of the state and this
//     node's portal group tag;
//   - the backing file of every LUN placed on this node exists, with the
//     LUN's size;
//   - the LUNs this node owns are open and exposed; a LUN that moved away,
//     changed or was deleted is removed, flushed and closed.
//
// Until replication exists a LUN is served by its owner only; SendTargets
// (portals) answers, for a target, the portals of the nodes that own one
// of its LUNs, each with its own portal group tag.
//
// Reconcile is idempotent and called from one goroutine; portals may be
// called concurrently from discovery sessions.
type reconciler struct {
	log    *slog.Logger
	srv    targetServer
	nodeID string
	// state returns the current cluster state (nil before the node
	// started): the nodes' portals and the portal group tags come from it.
	state func() *cluster.State
	// open opens the store of an owned LUN; ensure creates the backing
	// file of a LUN placed here. Tests replace them.
	open   func(l cluster.DesiredLUN) (Store, error)
	ensure func(l cluster.DesiredLUN) (created bool, err error)

	// repl is the node's replication side; nil serves every LUN from its
	// owner's local store only.
	repl *replicaHost
	// abort makes close skip the flushes (Agent.Abort).
	abort bool
	// resv, once the node runs, keeps every LU's persistent reservations
	// in Raft; nil keeps them in memory (tests without a node).
	resv reservationsNode

	// report, if set, gets what each Reconcile found of every LUN copy
	// placed here (reporter.observe), called with mu held.
	report func(map[uint64]copyOutcome)

	mu       sync.Mutex
	outcomes map[uint64]copyOutcome // this Reconcile's, by LUN ID
	targets  map[string]*runTarget  // by lower-case IQN
	ensured  map[string]uint64      // backing paths known to exist, with their size
	copies   map[uint64]bool        // replicated LUN IDs placed here (this reconcile)
	created  map[string]bool        // backing files ensureOnce had to create
}

// runTarget is a target as this node runs it.
type runTarget struct {
	iqn  string
	spec targetSpec
	dev  *scsi.Device
	luns map[uint64]*runLUN
}

// targetSpec is what AddTarget was given, apart from the device: a change
// of it needs the target removed and added again.
type targetSpec struct {
	alias string
	acl   string       // sorted, joined by \n
	chap  cluster.CHAP // zero: no CHAP
	tpgt  uint16
}

// runLUN is an owned LUN this node serves: over its Store, or for a
// replicated LUN over the owner Volume of copy c.
type runLUN struct {
	lun cluster.DesiredLUN
	s   Store
	c   *replicaCopy
	lu  *scsi.LU
	// For a replicated LUN: the backend that switches between the owner
	// Volume and standby, and the LU's port groups.
	sw     *switchBackend
	groups *alua.Groups
	// resv is the LU's cluster-wide reservation store (nil: in memory).
	resv *clusterReservations
}

func newReconciler(log *slog.Logger, srv targetServer, nodeID string, state func() *cluster.State) *reconciler {
	r := &reconciler{
		log: log, srv: srv, nodeID: nodeID, state: state,
		targets: map[string]*runTarget{}, ensured: map[string]uint64{}, created: map[string]bool{},
	}
	r.open = func(l cluster.DesiredLUN) (Store, error) { return OpenStore(l, log) }
	r.ensure = EnsureBacking
	return r
}

// errNotRegistered is returned while this node is not in the state yet: its
// portal group tag is unknown.
var errNotRegistered = errors.New("this node is not registered in the cluster state yet")

// Reconcile implements cluster.Reconciler. It does only local work (files,
// the in-process server), so it does not watch ctx.
func (r *reconciler) Reconcile(ctx context.Context, d *cluster.Desired) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	r.copies = map[uint64]bool{}
	r.outcomes = map[uint64]copyOutcome{}
	var tpgt uint16
	if len(d.Targets) > 0 {
		var st *cluster.State
		if r.state != nil {
			st = r.state()
		}
		tpgt = portalGroupTag(st, d.NodeID)
		if tpgt == 0 {
			return errNotRegistered
		}
	}
	want := map[string]bool{}
	for _, dt := range d.Targets {
		key := strings.ToLower(dt.IQN)
		want[key] = true
		if err := r.reconcileTarget(ctx, key, dt, tpgt); err != nil {
			errs = append(errs, fmt.Errorf("target %s: %w", dt.IQN, err))
			for _, l := range dt.LUNs { // the target itself failed
				if _, seen := r.outcomes[l.ID]; !seen {
					r.note(l, "", err)
				}
			}
		}
	}
	for key, rt := range r.targets {
		if !want[key] {
			r.log.Info("removing target", "target", rt.iqn)
			if err := r.srv.RemoveTarget(rt.iqn); err != nil {
				r.log.Warn("remove target", "target", rt.iqn, "err", err)
			}
			for n := range rt.luns {
				errs = append(errs, r.stopLUN(rt, n))
			}
			delete(r.targets, key)
		}
	}
	errs = append(errs, r.detachStale(false))
	if r.report != nil {
		r.report(r.outcomes)
	}
	return errors.Join(errs...)
}

func (r *reconciler) reconcileTarget(ctx context.Context, key string, dt cluster.DesiredTarget, tpgt uint16) error {
	spec := targetSpec{alias: dt.Alias, tpgt: tpgt}
	acl := slices.Clone(dt.ACL)
	slices.Sort(acl)
	spec.acl = strings.Join(acl, "\n")
	if dt.CHAP != nil {
		spec.chap = *dt.CHAP
	}
	rt := r.targets[key]
	if rt != nil && rt.spec != spec {
		// ACL, CHAP, alias or tag changed: the server takes them only in
		// AddTarget. Sessions of the target are closed; initiators log in
		// again under the new rules. The LUNs stay open.
		r.log.Info("target settings changed, re-adding it", "target", dt.IQN)
		if err := r.srv.RemoveTarget(rt.iqn); err != nil {
			r.log.Warn("remove target", "target", rt.iqn, "err", err)
		}
		if err := r.srv.AddTarget(targetConfig(dt, spec, rt.dev)); err != nil {
			return err
		}
		rt.spec, rt.iqn = spec, dt.IQN
	}
	if rt == nil {
		dev := scsi.NewDevice(scsi.DeviceConfig{Logger: r.log.With("target", dt.IQN)})
		if err := r.srv.AddTarget(targetConfig(dt, spec, dev)); err != nil {
			return err
		}
		r.log.Info("serving target", "target", dt.IQN, "tpgt", tpgt)
		rt = &runTarget{iqn: dt.IQN, spec: spec, dev: dev, luns: map[uint64]*runLUN{}}
		r.targets[key] = rt
	}

	var errs []error
	owned := map[uint64]bool{}
	for _, l := range dt.LUNs {
		if err := r.ensureOnce(l); err != nil {
			errs = append(errs, fmt.Errorf("LUN %d: %w", l.LUN.LUN, err))
			r.note(l, "", err)
			continue
		}
		if r.replicated(l) {
			// Exposed on every node with a copy: Active/Optimized on
			// the owner, Standby elsewhere.
			r.copies[l.ID] = true
			owned[l.LUN.LUN] = true
			err := r.reconcileReplicated(ctx, rt, l)
			if err != nil {
				errs = append(errs, fmt.Errorf("LUN %d: %w", l.LUN.LUN, err))
			}
			r.note(l, replicatedService(rt, l), err)
			continue
		}
		if !l.Owned {
			r.note(l, cluster.ServiceStandby, nil) // its file is ready
			continue
		}
		owned[l.LUN.LUN] = true
		if cur := rt.luns[l.LUN.LUN]; cur != nil {
			if sameLUN(cur.lun, l) && cur.c == nil {
				r.note(l, cluster.ServiceServing, nil)
				continue
			}
			r.log.Info("LUN changed, reopening it", "target", dt.IQN, "lun", l.LUN.LUN)
			if err := r.stopLUN(rt, l.LUN.LUN); err != nil {
				errs = append(errs, err)
			}
		}
		err := r.startLUN(rt, l)
		if err != nil {
			errs = append(errs, fmt.Errorf("LUN %d: %w", l.LUN.LUN, err))
		}
		r.note(l, cluster.ServiceServing, err)
	}
	for n := range rt.luns {
		if !owned[n] {
			r.log.Info("no longer serving LUN", "target", dt.IQN, "lun", n)
			errs = append(errs, r.stopLUN(rt, n))
		}
	}
	return errors.Join(errs...)
}

// sameLUN reports whether the running LUN a still matches the desired b:
// everything but the in-sync set and placement (the epoch included: a new
// epoch means another owner was in between, so the store is reopened).
func sameLUN(a, b cluster.DesiredLUN) bool {
	return sameShape(a, b) && a.LUN.Epoch == b.LUN.Epoch
}

// sameShape reports whether the exposed LU a still fits b: same file, size,
// sector size, IO mode and type (owner and epoch may differ).
func sameShape(a, b cluster.DesiredLUN) bool {
	return a.BackingPath == b.BackingPath && a.LUN.Size == b.LUN.Size && a.LUN.SectorSize == b.LUN.SectorSize &&
		a.LUN.IOMode == b.LUN.IOMode && a.LUN.Backing == b.LUN.Backing
}

func targetConfig(dt cluster.DesiredTarget, spec targetSpec, dev *scsi.Device) target.TargetConfig {
	tc := target.TargetConfig{
		Name: dt.IQN, Alias: dt.Alias, Device: dev, ACL: slices.Clone(dt.ACL),
		PortalGroupTag: spec.tpgt, RelativePortID: spec.tpgt,
	}
	if dt.CHAP != nil {
		tc.CHAP = &target.CHAPConfig{User: dt.CHAP.User, Secret: dt.CHAP.Secret,
			MutualUser: dt.CHAP.MutualUser, MutualSecret: dt.CHAP.MutualSecret}
	}
	return tc
}

// ensureOnce creates l's backing file unless this reconciler already did
// (or found it) with the same size.
func (r *reconciler) ensureOnce(l cluster.DesiredLUN) error {
	if r.ensured[l.BackingPath] == l.LUN.Size {
		return nil
	}
	created, err := r.ensure(l)
	if err != nil {
		return err
	}
	if created {
		r.created[l.BackingPath] = true
	}
	r.ensured[l.BackingPath] = l.LUN.Size
	return nil
}

func (r *reconciler) startLUN(rt *runTarget, l cluster.DesiredLUN) error {
	s, err := r.open(l)
	if err != nil {
		return err
	}
	if BackingSize(l) > int64(l.LUN.Size) {
		// A replicated LUN's store served by its owner alone (a node
		// without the replication side, in tests): only the data.
		cs, err := replication.NewCopyStore(s, replication.LUNID(l.ID), int64(l.LUN.Size))
		if err != nil {
			s.Close()
			return err
		}
		s = cs
	}
	return r.exposeLUN(rt, l, s, nil)
}

// exposeLUN serves s as LUN l of rt; on error s is closed.
func (r *reconciler) exposeLUN(rt *runTarget, l cluster.DesiredLUN, s Store, c *replicaCopy) error {
	_, err := r.exposeLUNWith(rt, l, s, c, nil)
	return err
}

// exposeLUNWith is exposeLUN with the LU's port groups (nil: one
// Active/Optimized group) and returns the run LUN.
func (r *reconciler) exposeLUNWith(rt *runTarget, l cluster.DesiredLUN, s Store, c *replicaCopy, groups scsi.PortGroupState) (*runLUN, error) {
	serial, naa := LUNIdentity(rt.iqn, l.LUN.LUN)
	// Persistent reservations live in Raft, the same on every node
	// (nil: in memory, tests without a node).
	var resv *clusterReservations
	var store scsi.ReservationStore
	if r.resv != nil && l.ID != 0 {
		resv = newClusterReservations(r.resv, r.log.With("target", rt.iqn, "lun", l.LUN.LUN), r.nodeID, rt.iqn, l.LUN.LUN, l.ID)
		store = resv
	}
	lu, err := scsi.NewLU(s, scsi.LUConfig{
		Reservations: store,
		PortGroups:   groups,
		BlockSize:    l.LUN.SectorSize,
		ReadOnly:     l.LUN.IOMode == cluster.IOModeReadOnly,
		WriteCache:   l.LUN.IOMode == cluster.IOModeWriteBack,
		Thin:         l.LUN.Backing == cluster.BackingFile && l.LUN.IOMode != cluster.IOModeReadOnly,
		SerialNumber: serial,
		DeviceID:     naa,
		Logger:       r.log.With("target", rt.iqn, "lun", l.LUN.LUN),
	})
	if err == nil {
		err = rt.dev.AddLU(l.LUN.LUN, lu)
	}
	if err != nil {
		if resv != nil {
			resv.Close()
		}
		s.Close()
		return nil, err
	}
	rl := &runLUN{lun: l, s: s, c: c, lu: lu, resv: resv}
	rt.luns[l.LUN.LUN] = rl
	r.log.Info("serving LUN", "target", rt.iqn, "lun", l.LUN.LUN, "path", l.BackingPath,
		"size", cluster.FormatSize(l.LUN.Size), "epoch", l.LUN.Epoch)
	return rl, nil
}

// stopLUN stops exposing LUN n of rt, then flushes and closes its store.
func (r *reconciler) stopLUN(rt *runTarget, n uint64) error {
	rl := rt.luns[n]
	if rl == nil {
		return nil
	}
	rt.dev.RemoveLU(n)
	delete(rt.luns, n)
	if rl.resv != nil {
		rl.resv.Close()
	}
	return closeStore(rl, fmt.Sprintf("%s/%d", rt.iqn, n), !r.abort)
}

// closeStore flushes (unless flush is false: an abort) and closes rl's
// store.
func closeStore(rl *runLUN, name string, flush bool) error {
	var errs []error
	if flush && rl.lun.LUN.IOMode != cluster.IOModeReadOnly {
		if err := rl.s.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("flush %s: %w", name, err))
		}
	}
	if err := rl.s.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close %s: %w", name, err))
	}
	return errors.Join(errs...)
}

// close stops every LUN (flushing it) and forgets every target; the
// server itself is shut down by the caller first.
func (r *reconciler) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for key, rt := range r.targets {
		for n := range rt.luns {
			errs = append(errs, r.stopLUN(rt, n))
		}
		delete(r.targets, key)
	}
	r.copies = nil
	errs = append(errs, r.detachStale(true))
	return errors.Join(errs...)
}

// portals answers SendTargets for a target: the iSCSI portals of the nodes
// that own one of its LUNs or hold a copy of a replicated one (each node its
// own portal group), or of every
// node that is not gone when the target has no LUN yet. Nil lets the server
// answer with the address the discovery came in on.
func (r *reconciler) portals(targetName string) []target.Portal {
	if r.state == nil {
		return nil
	}
	st := r.state()
	if st == nil {
		return nil
	}
	t := st.Targets[targetName]
	if t == nil {
		for iqn, tt := range st.Targets {
			if strings.EqualFold(iqn, targetName) {
				t = tt
			}
		}
	}
	if t == nil {
		return nil
	}
	serving := map[string]bool{}
	for _, l := range t.LUNs {
		serving[l.Owner] = true
		if r.repl != nil && l.Replicas > 1 {
			// Every copy's node exposes the LUN (Standby when it is
			// not the owner): a multipath initiator logs in to all.
			for _, id := range l.Placement {
				serving[id] = true
			}
		}
	}
	var out []target.Portal
	for _, ni := range st.SortedNodes() {
		if ni.ISCSIPortal == "" || ni.Health == cluster.HealthLeft || ni.Tag == 0 {
			continue
		}
		if len(t.LUNs) > 0 && !serving[ni.ID] {
			continue
		}
		out = append(out, target.Portal{Addr: ni.ISCSIPortal, TPGT: ni.Tag})
	}
	return out
}

// portalGroupTag is node id's target portal group tag (and relative
// target port ID), as the state machine gave it when the node registered:
// it never changes while the node is a member. 0 means not in the state.
func portalGroupTag(st *cluster.State, id string) uint16 {
	if st == nil || st.Nodes[id] == nil {
		return 0
	}
	return st.Nodes[id].Tag
}
