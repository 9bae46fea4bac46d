package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

// peer is the owner's view of one other copy: its node and its state,
// which only copyState's transitions change (copystate.go).
type peer struct {
	node NodeID
	copyState
}

// Volume is the owner side of a replicated LUN: a scsi.Backend that writes
// the local store and every in-sync mirror, and answers ErrNotOwner (ALUA
// transitioning) once it is no longer the owner of the current epoch.
type Volume struct {
	cfg    Config
	logger *slog.Logger
	clock  Clock
	lun    LUNID
	self   NodeID
	store  Store
	coord  Coordinator
	tr     Transport
	sem    chan struct{}
	ranges rangeLock
	limit  *tokenBucket
	// resyncFlush overrides resyncFlushBytes (tests).
	resyncFlush int64

	mu          sync.Mutex
	epoch       uint64
	seq         uint64
	opened      bool
	deposed     error
	closed      bool
	peers       map[NodeID]*peer
	order       []NodeID
	cancelWatch func()
	progress    map[NodeID]Progress
	// unchecked are the in-sync copies Open greeted with CheckOnOpen: they
	// may differ anywhere (the previous owner's writes in flight at its
	// end) until a Repair compared them; one that fails before gets every
	// region compared by its resync.
	unchecked map[NodeID]bool
	// gens are the copies' generations in the latest view (nil: the
	// coordinator records no identities, and nothing is checked).
	gens map[NodeID]Generation

	writes, replicatedBytes atomic.Uint64
}

// NewVolume returns the owner side of lun on node self, over store. Call
// Open before serving IO.
func NewVolume(cfg Config, lun LUNID, self NodeID, store Store, coord Coordinator, tr Transport) (*Volume, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil || coord == nil || tr == nil {
		return nil, fmt.Errorf("%w: store, coordinator and transport are required", ErrInvalidConfig)
	}
	v := &Volume{
		cfg:      cfg,
		logger:   cfg.logger().With("lun", uint64(lun), "node", string(self)),
		clock:    cfg.clock(),
		lun:      lun,
		self:     self,
		store:    store,
		coord:    coord,
		tr:       tr,
		sem:      make(chan struct{}, cfg.MaxInFlight),
		peers:    map[NodeID]*peer{},
		progress: map[NodeID]Progress{},
	}
	v.limit = newTokenBucket(v.clock, cfg.ResyncRate, cfg.RegionSize)
	if cfg.StateDir != "" {
		if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
			return nil, fmt.Errorf("replication: state dir: %w", err)
		}
	}
	return v, nil
}

func (v *Volume) dirtyPath(node NodeID) string {
	if v.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(v.cfg.StateDir, fmt.Sprintf("lun-%d-%s.dirty", v.lun, sanitizeName(string(node))))
}

func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

func (v *Volume) newUnflushed() *DirtyMap {
	if v.cfg.WriteThrough {
		return nil
	}
	return NewDirtyMap(v.store.Size(), v.cfg.RegionSize)
}

// openDirty loads the persisted map of node, or makes one with every region
// dirty when none was kept.
func (v *Volume) openDirty(node NodeID) (*DirtyMap, error) {
	if path := v.dirtyPath(node); path != "" {
		d, full, err := OpenDirtyMap(path, v.store.Size(), v.cfg.RegionSize)
		if err == nil && full {
			v.logger.Info("replication: no dirty map for an out-of-sync copy, it gets a full copy", "peer", string(node))
		}
		return d, err
	}
	d := NewDirtyMap(v.store.Size(), v.cfg.RegionSize)
	d.SetAll()
	return d, nil
}

// freshDirty is the map of a copy that was in sync until now: empty, with
// its file (re)created so a restart finds it.
func (v *Volume) freshDirty(node NodeID) *DirtyMap {
	d := NewDirtyMap(v.store.Size(), v.cfg.RegionSize)
	d.path = v.dirtyPath(node)
	d.gen = 1 // the empty map itself must reach the disk before any ack
	return d
}

// copyMaps makes node's maps for its copyState.
func (v *Volume) copyMaps(node NodeID) copyMaps {
	return copyMaps{fresh: func() *DirtyMap { return v.freshDirty(node) }, unflushed: v.newUnflushed}
}

// Open reads the LUN's view, checks that this node owns its epoch, says
// hello to every in-sync mirror (fencing older owners), loads the dirty
// maps of the out-of-sync copies and starts watching the view. A mirror
// that cannot be reached is dropped through the coordinator. The epoch
// must be one no other Volume has served (the cluster bumps the epoch for
// every start of ownership, a restart on the same node included): Open
// fails with ErrEpochReused when a mirror shows otherwise.
func (v *Volume) Open(ctx context.Context) error {
	view, err := v.coord.View(ctx, v.lun)
	if err != nil {
		return err
	}
	if view.Owner != v.self {
		return fmt.Errorf("%w: LUN %d is owned by %s in epoch %d", ErrNotOwner, v.lun, view.Owner, view.Epoch)
	}
	v.mu.Lock()
	if v.opened || v.closed {
		v.mu.Unlock()
		return fmt.Errorf("replication: volume already opened")
	}
	v.opened = true
	v.epoch = view.Epoch
	v.gens = maps.Clone(view.Gens)
	v.mu.Unlock()
	// The owner's own copy must be the one the cluster recorded
	// (invariant 7): a node whose disk was replaced must not serve.
	record, err := v.ownIdentity(view)
	if err != nil {
		v.depose(err)
		return err
	}
	v.mu.Lock()
	for _, n := range view.Replicas {
		if n == v.self {
			continue
		}
		p := &peer{node: n, copyState: inSyncCopy(v.copyMaps(n))}
		if !view.IsInSync(n) {
			d, err := v.openDirty(n)
			if err != nil {
				v.mu.Unlock()
				return fmt.Errorf("replication: dirty map of %s: %w", n, err)
			}
			p.copyState = outOfSyncCopy(d, v.copyMaps(n))
		}
		v.peers[n] = p
		v.order = append(v.order, n)
	}
	v.mu.Unlock()
	if v.cfg.LocalMirror != nil {
		v.cfg.LocalMirror.Fence(v.lun, view.Epoch)
	}

	type dialed struct {
		p    *peer
		conn Conn
		// sent is the generation the hello gave the copy (a fresh
		// LUN's), got the one the copy reported.
		sent, got Generation
		err       error
	}
	var wg sync.WaitGroup
	results := make(chan dialed, len(v.order))
	for _, n := range v.order {
		p := v.peers[n]
		if p.phase != phaseInSync {
			continue
		}
		if v.cfg.Down != nil && v.cfg.Down(n) {
			results <- dialed{p: p, err: fmt.Errorf("%w: node %s is recorded down", ErrPeerFailed, n)}
			continue
		}
		var sent Generation
		if view.Gens != nil && view.Fresh {
			sent = NewGeneration()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, got, err := v.helloGen(ctx, n, view.Epoch, 0, sent)
			// A new LUN's mirrors may not hold their copy yet (their
			// node is still creating it): give them AckTimeout before
			// dropping them, which would cost a full copy.
			for wait := v.cfg.AckTimeout; errors.Is(err, ErrNoCopy) && wait > 0 && ctx.Err() == nil; wait -= helloRetry {
				time.Sleep(helloRetry)
				conn, got, err = v.helloGen(ctx, n, view.Epoch, 0, sent)
			}
			if err == nil {
				if err = peerIdentity(view, n, sent, got); err != nil {
					conn.Close()
				}
			}
			results <- dialed{p, conn, sent, got, err}
		}()
	}
	wg.Wait()
	close(results)
	var stale error
	for r := range results {
		switch {
		case r.err == nil:
			v.mu.Lock()
			cerr := r.p.connected(r.conn)
			if cerr == nil && v.cfg.CheckOnOpen {
				if v.unchecked == nil {
					v.unchecked = map[NodeID]bool{}
				}
				v.unchecked[r.p.node] = true
			}
			v.mu.Unlock()
			if cerr != nil {
				// Failed meanwhile: nothing is sent on the connection.
				r.conn.Close()
			}
			if !r.sent.IsZero() {
				record[r.p.node] = r.sent
			}
		case errors.Is(r.err, ErrNotOwner):
			stale = r.err
		case errors.Is(r.err, ErrWrongCopy):
			// Not the copy Raft recorded, whatever its in-sync
			// membership says: it leaves the in-sync set through the
			// coordinator and gets every region.
			v.logger.Warn("replication: an in-sync copy is not the one the cluster recorded; it gets a full copy", "peer", string(r.p.node), "err", r.err)
			v.mu.Lock()
			v.failPeerLocked(r.p, nil, v.epoch, r.err)
			v.wrongCopyLocked(r.p, view.Gens[r.p.node], r.got)
			v.mu.Unlock()
		default:
			v.logger.Warn("replication: in-sync mirror unreachable at open", "peer", string(r.p.node), "err", r.err)
			v.mu.Lock()
			v.failPeerLocked(r.p, nil, v.epoch, r.err)
			if v.cfg.CheckOnOpen && !errors.Is(r.err, ErrCopyLost) {
				// It may hold writes the previous owner had in flight,
				// anywhere: compare every region when it comes back.
				if err := r.p.suspect(); err != nil {
					v.logger.Error("replication: marking a copy to compare", "peer", string(r.p.node), "err", err)
				}
			}
			v.mu.Unlock()
		}
	}
	if stale != nil {
		v.depose(stale)
		return stale
	}
	if len(record) > 0 {
		// Before serving: the generations of a fresh LUN's copies (and
		// of the owner's copy of a LUN from before identities) are
		// recorded before any write is acknowledged.
		if err := v.coord.RecordGenerations(ctx, v.lun, view.Epoch, record); err != nil {
			err = fmt.Errorf("replication: recording the copies' generations: %w", err)
			v.depose(err)
			return err
		}
		v.mu.Lock()
		for n, g := range record {
			v.gens[n] = g
		}
		v.mu.Unlock()
	}
	cancel := v.coord.Watch(v.lun, v.onView)
	v.mu.Lock()
	v.cancelWatch = cancel
	v.mu.Unlock()
	// A view committed between View and Watch would be missed: check.
	if now, err := v.coord.View(ctx, v.lun); err == nil {
		v.onView(now)
	}
	return v.serving()
}

// helloRetry is the pause between hellos to a mirror without the LUN yet,
// or that does not know the epoch as committed yet.
const helloRetry = 100 * time.Millisecond

// helloGen dials node and announces epoch, with message flags (FlagFull)
// and, if gen is not zero, the copy's new generation (the mirror writes it
// before it answers). It returns the connection and the generation the
// copy reported (zero: none, or a mirror without identities). A mirror
// whose node has not applied the epoch yet (ErrEpochUnknown) is greeted
// again every helloRetry for up to AckTimeout before the error is
// returned.
func (v *Volume) helloGen(ctx context.Context, node NodeID, epoch uint64, flags uint8, gen Generation) (Conn, Generation, error) {
	var payload []byte
	if !gen.IsZero() {
		payload = gen[:]
	}
	conn, err := v.tr.Dial(ctx, node)
	if err != nil {
		return nil, Generation{}, err
	}
	for wait := v.cfg.AckTimeout; ; wait -= helloRetry {
		// The floor: every write sent on an older connection has a
		// sequence number at or below it, so the mirror refuses any
		// that arrive late.
		v.mu.Lock()
		floor := v.seq
		v.mu.Unlock()
		res := <-v.send(conn, []*Message{{Type: MsgHello, Flags: flags, LUN: v.lun, Epoch: epoch, Seq: floor, Payload: payload}})
		switch {
		case res.err == nil && res.rep.Seq > floor:
			conn.Close()
			return nil, Generation{}, fmt.Errorf("%w: %s applied sequence %d of epoch %d, this volume is at %d", ErrEpochReused, node, res.rep.Seq, epoch, floor)
		case res.err == nil:
			var got Generation
			if len(res.rep.Payload) == len(got) {
				copy(got[:], res.rep.Payload)
			}
			return conn, got, nil
		case !errors.Is(res.err, ErrEpochUnknown) || wait <= 0 || !sleepCtx(ctx, helloRetry):
			conn.Close()
			return nil, Generation{}, res.err
		}
		v.logger.Debug("replication: the mirror does not know the epoch yet, greeting it again", "peer", string(node), "epoch", epoch)
	}
}

// sleepCtx waits d, or less if ctx ends (then it returns false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (v *Volume) onView(view View) {
	v.mu.Lock()
	epoch := v.epoch
	v.mu.Unlock()
	if view.Epoch > epoch || (view.Epoch == epoch && view.Owner != v.self) {
		v.depose(fmt.Errorf("%w: LUN %d moved to %s in epoch %d", ErrNotOwner, v.lun, view.Owner, view.Epoch))
		return
	}
	if view.Epoch == epoch {
		v.followReplicas(view)
	}
}

// followReplicas adds a peer for every replica the view added (a new copy:
// out of sync with every region dirty, so the resync gives it a full copy)
// and forgets the peers of replicas it removed (their dirty maps too).
func (v *Volume) followReplicas(view View) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.servingLocked() != nil {
		return
	}
	v.gens = maps.Clone(view.Gens)
	for _, n := range view.Replicas {
		if n == v.self || v.peers[n] != nil {
			continue
		}
		d := v.freshDirty(n)
		d.SetAll()
		if err := d.Flush(); err != nil {
			v.logger.Warn("replication: persisting the dirty map of a new copy failed", "peer", string(n), "err", err)
		}
		v.peers[n] = &peer{node: n, copyState: outOfSyncCopy(d, v.copyMaps(n))}
		v.order = append(v.order, n)
		v.logger.Info("replication: new copy, it gets a full copy", "peer", string(n))
	}
	for _, n := range v.order {
		p := v.peers[n]
		switch {
		case p.phase == phaseInSync && p.conn != nil && view.IsReplica(n) && !view.IsInSync(n):
			// Raft says out of sync, the volume says in sync: someone
			// else (the copy's own node, which found its copy lost)
			// recorded it. The view may also just be older than the
			// copy's join, so only probe: a lost copy answers
			// copy-lost, and the usual failure path drops it with
			// every region dirty.
			go v.probe(p, p.conn, view.Epoch)
		case (p.phase == phaseOutOfSync || p.phase == phaseResyncing) && view.IsInSync(n):
			// Raft says in sync, the volume does not replicate to the
			// copy: an in-sync change of unknown outcome (or someone
			// else's) left Raft listing a copy that misses writes.
			go v.dropListed(n, view.Epoch)
		}
	}
	for _, n := range slices.Clone(v.order) {
		if view.IsReplica(n) {
			continue
		}
		p := v.peers[n]
		d, err := p.removed()
		if err != nil {
			continue // a copy the owner writes to leaves once out of sync
		}
		delete(v.peers, n)
		v.order = slices.DeleteFunc(v.order, func(id NodeID) bool { return id == n })
		if d != nil {
			if err := d.Remove(); err != nil {
				v.logger.Warn("replication: removing the dirty map of a removed copy failed", "peer", string(n), "err", err)
			}
		}
		v.logger.Info("replication: copy removed", "peer", string(n))
	}
}

// dropListed drops copy n, which a view of epoch listed in sync while this
// volume did not replicate to it (out of sync or resyncing), unless the
// view read again no longer lists it (the one delivered may be older than
// the drop that took the copy out). The drop is the failed copy's: writes
// it misses wait for the commit, and if that fails the volume stops
// serving. A resync of the copy stops; it is resynced later, as usual.
func (v *Volume) dropListed(n NodeID, epoch uint64) {
	if cur, err := v.coord.View(context.Background(), v.lun); err == nil && (cur.Epoch != epoch || !cur.IsInSync(n)) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	p := v.peers[n]
	if p == nil || v.servingLocked() != nil || v.epoch != epoch {
		return
	}
	drop, err := p.listedInSync()
	if err != nil {
		return // in sync, joining or dropping meanwhile
	}
	v.suspectUncheckedLocked(p, false)
	v.runDropLocked(p, drop, nil, epoch, "Raft lists the copy in sync but the owner does not replicate to it")
}

// probe sends a flush to an in-sync copy on its connection and fails the
// copy if it errs.
func (v *Volume) probe(p *peer, conn Conn, epoch uint64) {
	if res := <-v.send(conn, []*Message{{Type: MsgFlush, LUN: v.lun, Epoch: epoch}}); res.err != nil {
		v.peerFailed(p, conn, epoch, res.err, 0, 0)
	}
}

// deposeIfStale deposes the volume when err is a mirror's stale-epoch
// answer (a newer owner exists) and reports whether it was.
func (v *Volume) deposeIfStale(err error) bool {
	var stale *StaleEpochError
	if !errors.As(err, &stale) {
		return false
	}
	v.depose(err)
	return true
}

// Depose makes the volume stop serving for good: every later call answers
// an error matching ErrNotOwner (ALUA transitioning). The cluster calls it
// when this node's ownership lease runs out without a quorum (invariant
// 5), before anyone else may take the LUN over.
func (v *Volume) Depose(reason error) {
	if reason == nil {
		reason = errors.New("deposed by the cluster")
	}
	v.depose(reason)
}

// depose stops serving for good: every later call answers ErrNotOwner.
func (v *Volume) depose(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.deposeLocked(err)
}

// deposeLocked is depose for a caller holding v.mu.
func (v *Volume) deposeLocked(err error) {
	if v.deposed != nil {
		return
	}
	if !errors.Is(err, ErrNotOwner) {
		err = fmt.Errorf("%w: %w", ErrNotOwner, err)
	}
	v.deposed = err
	v.logger.Warn("replication: volume stops serving", "err", err)
	for _, p := range v.peers {
		p.closeConn()
	}
}

// Serving returns nil while the volume serves IO, else why it does not
// (deposed, fenced, closed, or not opened yet): the cluster reopens the LUN
// in a new epoch when it still owns it.
func (v *Volume) Serving() error { return v.serving() }

func (v *Volume) serving() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.servingLocked()
}

func (v *Volume) servingLocked() error {
	switch {
	case v.closed:
		return ErrClosed
	case v.deposed != nil:
		return v.deposed
	case !v.opened:
		return fmt.Errorf("%w: volume not opened", ErrNotOwner)
	}
	return nil
}

type sendResult struct {
	conn Conn
	err  error
	rep  *Message // the last reply, when err is nil
}

// send sends msgs on conn and reports once: nil when every reply is OK, or
// the first failure (connection error, ErrTimeout after AckTimeout, a
// *StaleEpochError, or ErrPeerFailed).
func (v *Volume) send(conn Conn, msgs []*Message) <-chan sendResult {
	return v.sendOn(conn, msgs, false)
}

// sendQueued is send that leaves the requests queued on a QueueConn: the
// caller flushes the connection (see flushConns) once it released v.mu.
func (v *Volume) sendQueued(conn Conn, msgs []*Message) <-chan sendResult {
	return v.sendOn(conn, msgs, true)
}

func flushConns(conns []Conn) {
	for _, c := range conns {
		if q, ok := c.(QueueConn); ok {
			q.Flush()
		}
	}
}

func (v *Volume) sendOn(conn Conn, msgs []*Message, queue bool) <-chan sendResult {
	ch := make(chan sendResult, 1)
	if conn == nil {
		ch <- sendResult{err: fmt.Errorf("%w: not connected", ErrPeerFailed)}
		return ch
	}
	var once sync.Once
	var timer Timer
	var timerMu sync.Mutex
	finish := func(err error, rep *Message) {
		once.Do(func() {
			timerMu.Lock()
			if timer != nil {
				timer.Stop()
			}
			timerMu.Unlock()
			ch <- sendResult{conn, err, rep}
		})
	}
	timerMu.Lock()
	timer = v.clock.AfterFunc(v.cfg.AckTimeout, func() { finish(ErrTimeout, nil) })
	timerMu.Unlock()
	remaining := atomic.Int64{}
	remaining.Store(int64(len(msgs)))
	put := conn.Send
	if q, ok := conn.(QueueConn); ok && queue {
		put = q.Queue
	}
	for _, m := range msgs {
		put(m, func(rep *Message, err error) {
			switch {
			case err != nil:
				finish(err, nil)
			case rep.Status == StatusStaleEpoch:
				finish(&StaleEpochError{LUN: v.lun, Epoch: m.Epoch, Newest: rep.Epoch}, nil)
			case rep.Status != StatusOK:
				base := ErrPeerFailed
				switch rep.Status {
				case StatusNoLUN:
					base = ErrNoCopy
				case StatusCopyLost:
					base = ErrCopyLost
				case StatusEpochUnknown:
					base = ErrEpochUnknown
				}
				finish(fmt.Errorf("%w: %v %s", base, m.Type, rep.Status), nil)
			case remaining.Add(-1) == 0:
				finish(nil, rep)
			}
		})
	}
	return ch
}

// failPeerLocked handles a copy that failed a request (or could not be
// reached) with err (nil: unknown). It returns the episode a write that the
// copy missed must wait for before it is acknowledged (nil when none). A
// copy that answered ErrCopyLost gets every region marked: a full copy.
// What the failure does to the copy is copyState.fail's. Callers hold v.mu.
func (v *Volume) failPeerLocked(p *peer, conn Conn, epoch uint64, err error) *episode {
	lost := errors.Is(err, ErrCopyLost)
	if serr := v.servingLocked(); serr != nil && v.opened {
		// Deposed or closed: the connections were cut on purpose, and
		// nothing is acknowledged any more, so nothing is dropped.
		p.hangUp(conn)
		if lost && p.lose() {
			v.logger.Warn("replication: the copy was lost, it gets a full copy", "peer", string(p.node))
		}
		return endedEpisode(serr)
	}
	f := p.fail(conn, lost)
	v.suspectUncheckedLocked(p, lost)
	if f.drop != nil {
		v.runDropLocked(p, f.drop, f.join, epoch, "mirror failed")
	}
	if f.leftResync {
		v.logger.Warn("replication: mirror failed during resync", "peer", string(p.node))
	}
	if f.lost {
		v.logger.Warn("replication: the copy was lost, it gets a full copy", "peer", string(p.node))
	}
	return f.wait
}

// suspectUncheckedLocked marks every region of p to compare when p left
// the in-sync set before a Repair compared it after a takeover (unchecked):
// only the regions it missed since would be resynced, not those where the
// previous owner's last writes made it differ. Callers hold v.mu.
func (v *Volume) suspectUncheckedLocked(p *peer, lost bool) {
	if !v.unchecked[p.node] {
		return
	}
	delete(v.unchecked, p.node)
	if lost {
		return // a full copy anyway
	}
	if err := p.suspect(); err != nil {
		v.logger.Error("replication: marking a copy to compare", "peer", string(p.node), "err", err)
		return
	}
	v.logger.Info("replication: a copy left before the new owner compared it: its resync compares every region", "peer", string(p.node))
}

// runDropLocked proposes the removal of p, which a transition just
// switched to dropping with episode ep, from the in-sync set (once join,
// if not nil, ended): every write it misses marks its dirty map and waits
// for that commit, and if the commit fails the volume stops serving. why
// says what happened, for the log. Callers hold v.mu.
func (v *Volume) runDropLocked(p *peer, ep, join *episode, epoch uint64, why string) {
	v.logger.Warn("replication: "+why+", dropping it from the in-sync set", "peer", string(p.node), "epoch", epoch)
	go v.runDrop(p, ep, epoch, join)
}

// runDrop commits the drop of p, then lets the writes it missed complete.
// The drop is proposed unless join was refused: a MarkInSync that failed
// otherwise may have committed (DropFromInSync is idempotent).
func (v *Volume) runDrop(p *peer, ep *episode, epoch uint64, join *episode) {
	maybeInSync := true
	if join != nil {
		<-join.done
		maybeInSync = join.mayHaveCommitted
	}
	var err error
	if maybeInSync {
		err = v.coord.DropFromInSync(context.Background(), v.lun, epoch, p.node)
	}
	v.mu.Lock()
	d, gen, terr := p.dropUnflushed()
	v.mu.Unlock()
	if err == nil {
		err = terr
	}
	if err == nil {
		err = d.WaitDurable(gen)
	}
	if err == nil {
		// The map must be on disk (a copy that was in sync had none)
		// before a write the copy misses is acknowledged.
		err = d.Flush()
	}
	v.mu.Lock()
	if err != nil {
		err = fmt.Errorf("%w: dropping %s from the in-sync set: %w", ErrNotOwner, p.node, err)
		terr = p.dropFailed(ep, err)
	} else {
		v.logger.Info("replication: mirror dropped from the in-sync set", "peer", string(p.node), "epoch", epoch)
		terr = p.dropCommitted(ep)
	}
	if terr != nil {
		// Not the copy's drop any more (a bug): let the writes that
		// wait for it go on all the same.
		v.logger.Error("replication: ending a drop", "peer", string(p.node), "err", terr)
		ep.end(err)
	}
	v.mu.Unlock()
	if err != nil {
		v.depose(err)
	}
}

// Size returns the capacity in bytes.
func (v *Volume) Size() int64 { return v.store.Size() }

// ReadAt reads the owner's local copy.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	if err := v.serving(); err != nil {
		return 0, err
	}
	return v.store.ReadAt(p, off)
}

// MappedExtent reports the provisioning of the owner's copy at off (GET
// LBA STATUS): an Unmap deallocated the range on every in-sync copy.
func (v *Volume) MappedExtent(off int64) (bool, int64, error) {
	if err := v.serving(); err != nil {
		return false, 0, err
	}
	return mappedExtent(v.store, off, v.store.Size())
}

// WriteAt writes p at off on every in-sync copy (IO mode write-back:
// into the copies' caches; write-through: durable).
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	return v.write(MsgWrite, p, off, int64(len(p)), v.cfg.WriteThrough)
}

// WriteAtFUA writes p at off durably on every in-sync copy.
func (v *Volume) WriteAtFUA(p []byte, off int64) (int, error) {
	return v.write(MsgWrite, p, off, int64(len(p)), true)
}

// Unmap deallocates the range on every in-sync copy.
func (v *Volume) Unmap(off, length int64) error {
	_, err := v.write(MsgUnmap, nil, off, length, v.cfg.WriteThrough)
	return err
}

type durable struct {
	d   *DirtyMap
	gen uint64
}

func (v *Volume) write(kind MsgType, p []byte, off, length int64, fua bool) (int, error) {
	if off < 0 || length < 0 || length > v.store.Size() || off > v.store.Size()-length {
		return 0, fmt.Errorf("%w: %d bytes at %d of %d", ErrOutOfRange, length, off, v.store.Size())
	}
	if err := v.serving(); err != nil {
		return 0, err
	}
	if length == 0 {
		return 0, nil
	}
	v.sem <- struct{}{}
	defer func() { <-v.sem }()
	held := v.ranges.lock(off, length)
	defer v.ranges.unlock(held)

	n, localErr, err := v.replicate(kind, p, off, length, fua, true)
	if err != nil {
		return 0, err
	}
	if localErr != nil {
		// The mirrors may hold what the owner's copy could not take:
		// send them the owner's content of the range back, so the
		// copies agree again (on the old data, as the initiator was
		// told the write failed).
		// In pieces: an unmap can span the whole volume.
		buf := make([]byte, min(length, v.cfg.RegionSize))
		for pos := off; pos < off+length; pos += int64(len(buf)) {
			chunk := buf[:min(int64(len(buf)), off+length-pos)]
			if _, rerr := v.store.ReadAt(chunk, pos); rerr != nil {
				v.depose(fmt.Errorf("owner's copy failed a write and a read at %d: %w", pos, rerr))
				break
			}
			if _, _, err := v.replicate(MsgWrite, chunk, pos, int64(len(chunk)), true, false); err != nil {
				return 0, err
			}
		}
		return n, localErr
	}
	v.writes.Add(1)
	if kind == MsgUnmap {
		return 0, nil
	}
	return len(p), nil
}

// replicate sends one write or unmap to every copy that takes writes and,
// if local, applies it to the owner's store meanwhile. It returns the local
// result and, separately, the error that forbids acknowledging (a peer
// failure whose drop did not commit, a stale epoch). Callers hold the
// range lock.
func (v *Volume) replicate(kind MsgType, p []byte, off, length int64, fua, local bool) (n int, localErr, err error) {
	var flags uint8
	if fua {
		flags = FlagFUA
	}
	v.mu.Lock()
	if err := v.servingLocked(); err != nil {
		v.mu.Unlock()
		return 0, nil, err
	}
	epoch := v.epoch
	var msgs []*Message
	if kind == MsgUnmap {
		v.seq++
		msgs = append(msgs, &Message{Type: MsgUnmap, Flags: flags, LUN: v.lun, Epoch: epoch, Seq: v.seq, Offset: off, Length: uint64(length)})
	} else {
		for pos := 0; pos < len(p); pos += v.cfg.MaxMessage {
			chunk := p[pos:min(len(p), pos+v.cfg.MaxMessage)]
			v.seq++
			msgs = append(msgs, &Message{Type: MsgWrite, Flags: flags, LUN: v.lun, Epoch: epoch, Seq: v.seq, Offset: off + int64(pos), Length: uint64(len(chunk)), Payload: chunk})
		}
	}
	var (
		sends    []sent
		flush    []Conn
		waits    []*episode
		durables []durable
	)
	for _, n := range v.order {
		pr := v.peers[n]
		w := pr.routeWrite(off, length, fua)
		if w.send {
			sends = append(sends, sent{pr, v.sendQueued(w.conn, msgs)})
			if w.conn != nil {
				flush = append(flush, w.conn)
			}
		}
		if w.marked != nil {
			durables = append(durables, *w.marked)
		}
		if w.wait != nil {
			waits = append(waits, w.wait)
		}
	}
	v.mu.Unlock()
	flushConns(flush)

	switch {
	case !local:
	case kind == MsgUnmap:
		localErr = unmapStore(v.store, off, length)
		if localErr == nil && fua {
			localErr = v.store.Flush()
		}
	case fua:
		n, localErr = writeFUA(v.store, p, off)
	default:
		n, localErr = v.store.WriteAt(p, off)
	}

	if brokenAckEarly {
		// Broken on purpose (see broken_ackearly.go): the answers are
		// handled after the write was acknowledged.
		go v.awaitSends(sends, epoch, off, length)
		return n, localErr, nil
	}
	failed, w, d := v.awaitSends(sends, epoch, off, length)
	waits, durables = append(waits, w...), append(durables, d...)
	for _, ep := range waits {
		<-ep.done
		if ep.err != nil && failed == nil {
			failed = ep.err
		}
	}
	for _, d := range durables {
		if err := d.d.WaitDurable(d.gen); err != nil && failed == nil {
			// Without the bit on disk a restart could forget that
			// the copy misses this write: refuse to acknowledge.
			failed = fmt.Errorf("%w: %w", ErrNotOwner, err)
			v.depose(failed)
		}
	}
	if failed != nil {
		return 0, nil, failed
	}
	v.replicatedBytes.Add(uint64(length) * uint64(len(sends)))
	return n, localErr, nil
}

// sent is one copy's share of a replicated write: the channel its answer
// comes on.
type sent struct {
	p  *peer
	ch <-chan sendResult
}

// awaitSends waits for every copy's answer to a write at [off, off+length)
// of epoch: a stale answer deposes the volume (failed); a failed copy is
// dropped (its drop episode is in waits) and the range marked in its dirty
// map (in durables).
func (v *Volume) awaitSends(sends []sent, epoch uint64, off, length int64) (failed error, waits []*episode, durables []durable) {
	for _, s := range sends {
		res := <-s.ch
		if res.err == nil {
			continue
		}
		if v.deposeIfStale(res.err) {
			failed = res.err
			continue
		}
		v.mu.Lock()
		if ep := v.failPeerLocked(s.p, res.conn, epoch, res.err); ep != nil {
			waits = append(waits, ep)
		}
		if s.p.dirty != nil {
			durables = append(durables, durable{s.p.dirty, s.p.dirty.Mark(off, length)})
		}
		v.mu.Unlock()
	}
	return failed, waits, durables
}

// Flush makes every acknowledged write durable on every in-sync copy
// (SYNCHRONIZE CACHE).
func (v *Volume) Flush() error {
	if err := v.serving(); err != nil {
		return err
	}
	type sent struct {
		p    *peer
		snap *DirtyMap
		ch   <-chan sendResult
	}
	v.mu.Lock()
	if err := v.servingLocked(); err != nil {
		v.mu.Unlock()
		return err
	}
	epoch := v.epoch
	var sends []sent
	var waits []*episode
	for _, n := range v.order {
		pr := v.peers[n]
		f := pr.flushStarted()
		if f.send {
			sends = append(sends, sent{pr, f.snap, v.send(f.conn, []*Message{{Type: MsgFlush, LUN: v.lun, Epoch: epoch}})})
		}
		if f.wait != nil {
			waits = append(waits, f.wait)
		}
	}
	v.mu.Unlock()
	localErr := v.store.Flush()
	var failed error
	for _, s := range sends {
		res := <-s.ch
		if res.err == nil {
			continue
		}
		if v.deposeIfStale(res.err) {
			failed = res.err
			continue
		}
		v.mu.Lock()
		// The copy may have lost what it cached since its last flush.
		s.p.flushFailed(s.snap)
		if ep := v.failPeerLocked(s.p, res.conn, epoch, res.err); ep != nil {
			waits = append(waits, ep)
		}
		v.mu.Unlock()
	}
	for _, ep := range waits {
		<-ep.done
		if ep.err != nil && failed == nil {
			failed = ep.err
		}
	}
	if failed != nil {
		return failed
	}
	return localErr
}

// ErrorKind classifies an error of this volume for scsi: not the owner
// (deposed, fenced, closed) is BackendErrNotReady, which scsi answers with
// the ALUA transitioning sense.
func (v *Volume) ErrorKind(err error) scsi.BackendErrorKind {
	switch {
	case errors.Is(err, ErrNotOwner), errors.Is(err, ErrClosed):
		return scsi.BackendErrNotReady
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return scsi.BackendErrNoSpace
	case errors.Is(err, syscall.EROFS):
		return scsi.BackendErrReadOnly
	}
	return scsi.BackendErrOther
}

// Close stops the volume: later calls fail with ErrClosed. Dirty maps are
// persisted.
func (v *Volume) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	cancel := v.cancelWatch
	var maps []*DirtyMap
	for _, p := range v.peers {
		p.closeConn()
		if p.dirty != nil {
			maps = append(maps, p.dirty)
		}
	}
	v.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	var errs []error
	for _, d := range maps {
		errs = append(errs, d.Flush())
	}
	return errors.Join(errs...)
}

// Epoch returns the epoch the volume serves.
func (v *Volume) Epoch() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.epoch
}

// PeerStatus describes one other copy as the owner sees it.
type PeerStatus struct {
	Node         NodeID
	State        string
	DirtyRegions int64
}

// Peers returns the state of every other copy.
func (v *Volume) Peers() []PeerStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []PeerStatus
	for _, n := range v.order {
		p := v.peers[n]
		st := PeerStatus{Node: n, State: p.phase.String()}
		if p.dirty != nil {
			st.DirtyRegions = p.dirty.Count()
		}
		out = append(out, st)
	}
	return out
}

// InSync returns the copies the owner currently waits for (in sync or
// joining), itself included.
func (v *Volume) InSync() []NodeID {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := []NodeID{v.self}
	for _, n := range v.order {
		if v.peers[n].waitedFor() {
			out = append(out, n)
		}
	}
	return slices.Clip(out)
}

// Stats counts acknowledged writes and the bytes sent to mirrors for them.
func (v *Volume) Stats() (writes, replicatedBytes uint64) {
	return v.writes.Load(), v.replicatedBytes.Load()
}

var (
	_ scsi.Backend               = (*Volume)(nil)
	_ scsi.Unmapper              = (*Volume)(nil)
	_ scsi.ForceUnitAccessWriter = (*Volume)(nil)
	_ scsi.ErrorKinder           = (*Volume)(nil)
)
