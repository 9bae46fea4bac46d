package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// replicaHost is the replication side of a cluster node:
//
//   - a Mirror holding this node's copy of every replicated LUN placed
//     here, served on the replication port, fenced at every epoch Raft
//     commits;
//   - for each replicated LUN this node owns, a Volume (the owner side)
//     over the same Store, opened in an epoch this node claimed through
//     Raft for itself (every start of ownership needs an epoch of its own);
//   - a control loop that resyncs the out-of-sync copies whose node is
//     back, and deposes every owned volume when this node loses its owner
//     lease (invariant 5).
//
// The reconciler drives it: attach for a LUN placed here, open for one it
// owns, closeVolume when it stops serving one, detach when the copy leaves
// this node.
type replicaHost struct {
	log      *slog.Logger
	self     string
	stateDir string
	// resyncRate is Config.ResyncRate of every volume (bytes/s, 0: no cap).
	resyncRate int64
	// volumeConfig is the base of every owner volume's configuration.
	volumeConfig replication.Config
	// writeHook is Deps.WriteHook.
	writeHook func(lunID, epoch uint64, off int64, data []byte)
	mirror    *replication.Mirror
	tr        replication.Transport
	server    *replication.TCPServer
	ln        net.Listener

	// Set once the cluster node runs (before the first reconcile).
	coord replication.Coordinator
	// propose proposes "node owns LUN (iqn, lun) from epoch+1".
	propose func(ctx context.Context, iqn string, lun uint64, node string, epoch uint64) error
	// state returns the cluster state (node health for resync).
	state func() *cluster.State
	// lease returns the generation of this node's owner lease and
	// whether it holds one; leaseValid whether generation gen still
	// holds (cluster.Node's Lease and LeaseValid).
	lease      func() (gen uint64, ok bool)
	leaseValid func(gen uint64) bool
	// clock drives the control loop and the volumes' timers.
	clock replication.Clock
	// repairs counts the takeover repairs running (Agent.Repairing).
	repairs atomic.Int32
	// suspect: this node's previous run ended uncleanly across a reboot;
	// its write-back copies may have lost acknowledged writes (runstate.go).
	suspect bool
	// abort makes detach skip the flushes (Agent.Abort).
	abort bool
	// reconcile runs the node's reconciler on the current state (the
	// loop calls it when a volume was deposed, see loop).
	reconcile func()

	mu      sync.Mutex
	copies  map[uint64]*replicaCopy // by LUN ID
	stopped map[uint64]bool         // LUN IDs a leave stopped serving (handover.go)
	done    chan struct{}           // closed by stop
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// replicaCopy is this node's copy of one replicated LUN.
type replicaCopy struct {
	id uint64
	// store is the LUN's data and the copy's identity block over the
	// store the node opened.
	store   *replication.CopyStore
	claimed uint64 // the epoch this node claimed for its next Volume
	// attempted is the epoch of a claim whose proposal answered an
	// error: it may have committed (open takes it when the state shows
	// it with this node as owner).
	attempted uint64
	// vol is the owner Volume while this node serves the LUN, with the
	// lease generation it was opened under; the LU's switchBackend reads
	// it on every command.
	vol atomic.Pointer[ownedVolume]
	// io is read-held by every command of the LU for its whole run, so
	// that stopServing can wait until none is in flight (handover.go).
	io sync.RWMutex
	// resyncing is set while the control loop resyncs this volume's copies.
	resyncing bool
	// suspect: a write-back copy that may have lost acknowledged writes
	// (a power loss); it is not served or trusted until compared
	// (reconcile_repl.go, suspectCopy). Guarded by the reconciler.
	suspect bool
}

func newReplicaHost(log *slog.Logger, self, dataDir string, ln net.Listener, resolve replication.Resolver, dial replication.DialFunc) *replicaHost {
	h := &replicaHost{
		log:      log,
		self:     self,
		stateDir: filepath.Join(dataDir, "replication"),
		mirror:   replication.NewMirror(log.With("side", "mirror")),
		tr:       replication.NewTCPTransportDialer(resolve, dial, log),
		ln:       ln,
		copies:   map[uint64]*replicaCopy{},
		done:     make(chan struct{}),
		clock:    replication.SystemClock{},
		// Config.Replication's tunables replace these (agent.New).
		volumeConfig: replication.DefaultConfig(),
	}
	h.server = replication.NewTCPServer(h.mirror.Handle, log)
	return h
}

// start serves the mirror and runs the control loop until stop.
func (h *replicaHost) start(errc chan<- error) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		if err := h.server.Serve(h.ln); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("replication port %s: %w", h.ln.Addr(), err)
		}
	}()
	h.wg.Add(1)
	go h.loop(ctx)
}

// stop ends the control loop and the mirror server. Volumes and stores are
// closed by the reconciler (close), which runs after.
func (h *replicaHost) stop() {
	if h.cancel != nil {
		h.cancel()
	}
	close(h.done)
	h.server.Close()
	h.wg.Wait()
}

// attach makes the mirror serve this node's copy of l, from the store open
// returns the first time (the LUN's data, then the copy's identity block),
// and fences it at l's epoch. It returns the copy.
func (h *replicaHost) attach(l cluster.DesiredLUN, open func() (Store, error)) (*replicaCopy, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.copies[l.ID]
	if c == nil {
		s, err := open()
		if err != nil {
			return nil, err
		}
		cs, err := replication.NewCopyStore(s, replication.LUNID(l.ID), int64(l.LUN.Size))
		if err != nil {
			s.Close()
			return nil, err
		}
		c = &replicaCopy{id: l.ID, store: cs, suspect: h.suspect && l.IOMode == cluster.IOModeWriteBack}
		h.copies[l.ID] = c
		h.mirror.AddLUN(replication.LUNID(l.ID), cs, l.Epoch)
		h.log.Info("holding a copy", "lun_id", l.ID, "target", l.Target, "lun", l.LUN.LUN, "epoch", l.Epoch,
			"generation", genName(cs.Generation()), "recorded", l.Generations[h.self])
		if err := cs.IdentityProblem(); err != nil {
			h.log.Info("the copy has no generation", "lun_id", l.ID, "why", err)
		}
	}
	h.mirror.Fence(replication.LUNID(l.ID), l.Epoch)
	return c, nil
}

// ownedVolume is an owner Volume and the generation of the owner lease it
// serves under: it serves only while that lease holds (cluster.Node's
// LeaseValid), and never again once it ended.
type ownedVolume struct {
	*replication.Volume
	leaseGen uint64
}

// volume returns c's owner Volume, or nil.
func (c *replicaCopy) volume() *replication.Volume {
	if o := c.vol.Load(); o != nil {
		return o.Volume
	}
	return nil
}

// errClaimed says the reconciler must come back once the epoch this node
// claimed is committed (the state changes, which triggers a reconcile).
var errClaimed = errors.New("claimed a new epoch; the volume opens when it is applied")

// open opens the owner Volume of l on copy c (c.vol), in an epoch of this
// node's own: when l's epoch is not one this node claimed (a restart, a
// takeover), it first claims epoch+1 through Raft and returns errClaimed.
func (h *replicaHost) open(ctx context.Context, c *replicaCopy, l cluster.DesiredLUN) error {
	if h.isStopped(c.id) {
		return errStopped // no claim either: it would race the handover's
	}
	gen, ok := h.lease()
	if !ok {
		return errors.New("no owner lease (cut off from the Raft leader): not serving as owner")
	}
	if c.claimed != l.Epoch && c.attempted == l.Epoch && l.Owner == h.self {
		// A claim whose apply answered an error committed all the
		// same: the epoch is this node's, no volume was opened in it.
		// Claiming again would bump the epoch at every reconcile that
		// the commit itself triggers, for as long as applies answer
		// errors (100000 entries in one simulator run).
		c.claimed, c.attempted = l.Epoch, 0
	}
	if c.claimed != l.Epoch {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := h.propose(cctx, l.Target, l.LUN.LUN, h.self, l.Epoch); err != nil {
			c.attempted = l.Epoch + 1 // maybe committed
			return fmt.Errorf("claim epoch %d: %w", l.Epoch+1, err)
		}
		c.claimed, c.attempted = l.Epoch+1, 0
		return errClaimed
	}
	cfg := h.volumeConfig
	cfg.WriteThrough = l.IOMode == cluster.IOModeWriteThrough
	cfg.StateDir = h.stateDir
	cfg.ResyncRate = h.resyncRate
	cfg.LocalMirror = h.mirror
	cfg.Logger = h.log.With("side", "owner")
	cfg.Clock = h.clock
	// Epoch 2 is the first owner's (claimed from the creation's epoch 1);
	// any later one follows an owner that may have died with writes in
	// flight to some copies: compare them all.
	cfg.CheckOnOpen = l.Epoch > 2
	if h.state != nil {
		nodes := h.state().Nodes
		cfg.Down = func(n replication.NodeID) bool {
			ni := nodes[string(n)]
			return ni == nil || ni.Health == cluster.HealthDead || ni.Health == cluster.HealthLeft
		}
	}
	v, err := replication.NewVolume(cfg, replication.LUNID(l.ID), replication.NodeID(h.self), c.store, h.coord, h.tr)
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := v.Open(octx); err != nil {
		v.Close()
		c.claimed = 0 // never open two Volumes in one epoch
		return err
	}
	// Under h.mu: stopServing either sees this volume (and deposes it)
	// or has marked the LUN stopped before.
	h.mu.Lock()
	if h.stopped[c.id] {
		h.mu.Unlock()
		v.Close()
		c.claimed = 0
		return errStopped
	}
	c.vol.Store(&ownedVolume{Volume: v, leaseGen: gen})
	h.mu.Unlock()
	h.log.Info("owning replicated LUN", "lun_id", l.ID, "epoch", l.Epoch, "in_sync", v.InSync())
	if cfg.CheckOnOpen {
		h.repairAfterTakeover(v, l)
	}
	return nil
}

// closeVolume stops the owner side of c (the copy stays on the mirror).
func (h *replicaHost) closeVolume(c *replicaCopy) error {
	o := c.vol.Swap(nil)
	if o == nil {
		return nil
	}
	return o.Close()
}

// detach removes the copy of LUN id from this node's mirror and closes its
// store (after its volume, if any). forget also removes the marker that the
// node held the copy (the copy left this node; not at a shutdown).
func (h *replicaHost) detach(id uint64, forget bool) error {
	h.mu.Lock()
	c := h.copies[id]
	delete(h.copies, id)
	h.mu.Unlock()
	if c == nil {
		return nil
	}
	errs := []error{h.closeVolume(c)}
	h.mirror.RemoveLUN(replication.LUNID(id))
	if forget {
		if err := os.Remove(h.heldPath(id)); err != nil && !os.IsNotExist(err) {
			h.log.Warn("removing the copy marker", "lun_id", id, "err", err)
		}
	}
	if !h.abort {
		if err := c.store.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("flush copy of LUN %d: %w", id, err))
		}
	}
	errs = append(errs, c.store.Close())
	return errors.Join(errs...)
}

// genName is g for logs: its hex digits, or "none".
func genName(g replication.Generation) string {
	if g.IsZero() {
		return "none"
	}
	return g.String()
}

// notRecorded reports whether c is not the copy of l the cluster recorded
// for this node for certain: a generation was recorded, and the copy has
// none (a blank or replaced disk, a file created again). A copy with
// another generation may be one the owner gave a new one at the start of
// a full copy that this node's state does not show yet: the owner's hello
// sorts that out.
func (h *replicaHost) notRecorded(c *replicaCopy, l cluster.DesiredLUN) bool {
	return l.Generations[h.self] != "" && c.store.Generation().IsZero()
}

// heldPath is the marker that this node held a copy of LUN id: a copy
// whose backing file is missing while the marker exists was lost. Since
// copy identities it matters only for a LUN from before them (no
// generation recorded); the identity catches a file created again, and a
// disk replaced by a blank one too.
func (h *replicaHost) heldPath(id uint64) string {
	return filepath.Join(h.stateDir, "copies", fmt.Sprintf("lun-%d", id))
}

// heldBefore reports whether this node held a copy of LUN id before.
func (h *replicaHost) heldBefore(id uint64) bool {
	_, err := os.Stat(h.heldPath(id))
	return err == nil
}

// recordHeld writes the marker of LUN id (once).
func (h *replicaHost) recordHeld(id uint64) {
	p := h.heldPath(id)
	if _, err := os.Stat(p); err == nil {
		return
	}
	err := os.MkdirAll(filepath.Dir(p), 0o750)
	if err == nil {
		err = os.WriteFile(p, nil, 0o640)
	}
	if err != nil {
		h.log.Warn("recording the copy held here failed: a lost file would not be noticed", "lun_id", id, "err", err)
	}
}

// ids returns the LUN IDs of the copies held here.
func (h *replicaHost) ids() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]uint64, 0, len(h.copies))
	for id := range h.copies {
		out = append(out, id)
	}
	return out
}

// volume returns the open owner Volume of LUN id, or nil.
func (h *replicaHost) volume(id uint64) *replication.Volume {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.copies[id]; c != nil {
		return c.volume()
	}
	return nil
}

// loop checks the owner lease often, and resyncs out-of-sync copies whose
// node is alive every second.
func (h *replicaHost) loop(ctx context.Context) {
	defer h.wg.Done()
	var n int
	for {
		// Ticks on the node's clock: a stalled node's loop stalls too.
		wake := make(chan struct{})
		t := h.clock.AfterFunc(250*time.Millisecond, func() { close(wake) })
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
		}
		if _, ok := h.lease(); !ok {
			if h.deposeAll() {
				h.kick() // report the owner's port group as transitioning
			}
			continue
		}
		if n++; n%4 == 0 && h.state != nil {
			st := h.state() // one copy of the state for both checks
			if st == nil {
				continue
			}
			// A volume deposed while the state still names this node
			// (a lease lost and regained before any failover) must be
			// opened again in a new epoch: no state change will come
			// to trigger the reconciler.
			if h.ownedNotServing(st) {
				h.kick()
			}
			h.resyncBack(ctx, st)
		}
	}
}

// kick runs the reconciler now, if the node set one.
func (h *replicaHost) kick() {
	if h.reconcile != nil {
		h.reconcile()
	}
}

// deposeAll stops every owned volume at once: this node lost its lease, and
// after it runs out another node may become owner. It reports whether it
// deposed a serving volume.
func (h *replicaHost) deposeAll() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	deposed := false
	for _, c := range h.copies {
		if v := c.volume(); v != nil && v.Serving() == nil {
			v.Depose(fmt.Errorf("%w: owner lease lost (no contact with the Raft leader)", replication.ErrNotOwner))
			deposed = true
		}
	}
	return deposed
}

// ownedNotServing reports whether the state names this node owner of a
// LUN it holds a copy of while no volume serves it here (deposed, or
// closed after a lost lease): the reconciler must open it again.
func (h *replicaHost) ownedNotServing(st *cluster.State) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, c := range h.copies {
		v := c.volume()
		if h.stopped[id] {
			continue // a leave is handing it over
		}
		if _, l := st.LUNByID(id); l != nil && l.Owner == h.self && (v == nil || v.Serving() != nil) {
			return true
		}
	}
	return false
}

// resyncBack starts a resync of every out-of-sync copy of an owned volume
// whose node the cluster records alive, one volume at a time each.
func (h *replicaHost) resyncBack(ctx context.Context, st *cluster.State) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.copies {
		v := c.volume()
		if v == nil || c.resyncing {
			continue
		}
		var todo []replication.NodeID
		for _, p := range v.Peers() {
			ni := st.Nodes[string(p.Node)]
			if p.State == "out-of-sync" && ni != nil && ni.Health == cluster.HealthAlive {
				todo = append(todo, p.Node)
			}
		}
		if len(todo) == 0 {
			continue
		}
		c.resyncing = true
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			for _, node := range todo {
				h.log.Info("resyncing copy", "lun_id", c.id, "peer", node)
				if err := v.Resync(ctx, node); err != nil {
					h.log.Warn("resync failed; retrying later", "lun_id", c.id, "peer", node, "err", err)
				} else {
					p, _ := v.Progress(node)
					h.log.Info("copy back in sync", "lun_id", c.id, "peer", node, "bytes_copied", p.BytesCopied)
				}
			}
			h.mu.Lock()
			c.resyncing = false
			h.mu.Unlock()
		}()
	}
}

// repairAfterTakeover compares every in-sync copy with this new owner's in
// the background and rewrites the regions that differ (writes the previous
// owner had in flight when it stopped, acknowledged to nobody).
func (h *replicaHost) repairAfterTakeover(v *replication.Volume, l cluster.DesiredLUN) {
	h.wg.Add(1)
	h.repairs.Add(1)
	go func() {
		defer h.wg.Done()
		defer h.repairs.Add(-1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-h.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		reps, err := v.RepairAll(ctx)
		for _, r := range reps {
			h.log.Info("new owner compared an in-sync copy", "lun_id", l.ID, "peer", r.Node,
				"regions", r.Regions, "rewritten", len(r.Divergent))
		}
		if err != nil && v.Serving() == nil {
			h.log.Warn("comparing copies after taking over", "lun_id", l.ID, "err", err)
		}
	}()
}
