package replication

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Resync catches node's copy up from its dirty-region map while IO goes
// on, then asks the coordinator to mark it in sync. It returns when the
// copy is in sync (nil), or with the error that stopped it (the copy then
// stays out of sync, its map intact, and Resync can be called again).
//
// How: the copy is greeted with the current epoch and switched to
// resyncing, so from then on every new write also goes to it and waits for
// its ack. Each dirty region is then copied under the region's range lock
// (no write to it interleaves), at most ResyncRate bytes per second, and
// marked copied, not clean: after every resyncFlushBytes, and when every
// dirty region was copied, the copy is flushed, and only then are the
// copied regions cleared (and the cleared map persisted). A copy that
// loses power before the flush has its regions copied again. When the map
// is empty after a flush, MarkInSync is proposed; only its commit makes
// the copy a member the owner treats as in sync.
func (v *Volume) Resync(ctx context.Context, node NodeID) error {
	v.mu.Lock()
	if err := v.servingLocked(); err != nil {
		v.mu.Unlock()
		return err
	}
	p := v.peers[node]
	if p == nil || p.claimResync() != nil {
		v.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotSyncing, node)
	}
	epoch := v.epoch
	d := p.dirty
	v.mu.Unlock()
	// Regions copied but not flushed when the resync stops are copied
	// again by the next one.
	d.ForgetCopied()
	defer func() {
		d.ForgetCopied()
		v.mu.Lock()
		if err := p.releaseResync(); err != nil {
			v.logger.Error("replication: ending a resync", "peer", string(node), "err", err)
		}
		v.mu.Unlock()
	}()

	conn, gen, err := v.resyncHello(ctx, p, epoch)
	if err != nil {
		if errors.Is(err, ErrNotOwner) {
			v.depose(err)
		}
		if errors.Is(err, ErrCopyLost) {
			v.mu.Lock()
			v.failPeerLocked(p, nil, epoch, err)
			v.mu.Unlock()
		}
		return err
	}
	v.mu.Lock()
	var compare bool
	if err = v.servingLocked(); err == nil {
		compare, err = p.startResync(conn)
	}
	if err != nil {
		v.mu.Unlock()
		conn.Close()
		return fmt.Errorf("%w: %s changed state", ErrNotSyncing, node)
	}
	v.mu.Unlock()

	prog := Progress{Node: node, RegionsTotal: d.Count(), Started: v.clock.Now()}
	v.setProgress(ctx, epoch, prog)
	lastReport := prog.Started
	var sinceFlush int64 // bytes copied or compared since the last flush
	for {
		r := d.NextUncopied(0)
		if r < 0 {
			// Every dirty region is on the copy: make it durable there
			// (what it holds in its cache too), then clear them. A write
			// that failed on an older connection may have marked a
			// region again meanwhile: copy it too.
			if err := v.flushResync(p, conn, epoch, d); err != nil {
				return err
			}
			sinceFlush = 0
			if d.Count() == 0 {
				break
			}
			continue
		}
		if err := v.limit.wait(ctx, v.cfg.RegionSize); err != nil {
			v.abortResync(p, conn)
			return err
		}
		n := min(v.cfg.RegionSize, v.store.Size()-r*v.cfg.RegionSize)
		same := false
		if compare {
			var err error
			if same, err = v.compareRegion(p, conn, epoch, r); err != nil {
				v.peerFailed(p, conn, epoch, err, 0, 0)
				return err
			}
		}
		if !same {
			if err := v.copyRegion(p, conn, epoch, r); err != nil {
				return err
			}
			prog.BytesCopied += n
		}
		prog.BytesDone += n
		prog.RegionsDone++
		prog.RegionsTotal = max(prog.RegionsTotal, prog.RegionsDone+d.Count()-d.copiedCount())
		if sinceFlush += n; sinceFlush >= v.resyncFlushEvery() {
			if err := v.flushResync(p, conn, epoch, d); err != nil {
				return err
			}
			sinceFlush = 0
		}
		if now := v.clock.Now(); now.Sub(lastReport) >= time.Second {
			lastReport = now
			v.setProgress(ctx, epoch, prog)
		}
	}

	v.mu.Lock()
	join, err := p.caughtUp(conn)
	if err != nil {
		v.mu.Unlock()
		return fmt.Errorf("%w: %s failed or was dirtied during resync", ErrPeerFailed, node)
	}
	v.mu.Unlock()

	// The complete counts are recorded before the copy reads in sync, so
	// status never shows an in-sync copy with a partial resync's count.
	prog.RegionsTotal = prog.RegionsDone
	v.setProgress(ctx, epoch, prog)
	err = v.coord.MarkInSync(ctx, v.lun, epoch, node, gen)

	v.mu.Lock()
	var terr error
	switch {
	case err == nil:
		terr = p.joinCommitted(join)
	case errors.Is(err, ErrNotOwner):
		// The epoch moved on: nothing was committed, and this volume
		// acknowledges nothing more.
		v.deposeLocked(err)
		terr = p.joinRefused(join)
	default:
		// Unknown: the entry may have committed all the same, and Raft
		// list the copy in sync. Writes stop going to it, so it leaves
		// through a committed drop before one it misses is acknowledged
		// (or the volume stops serving).
		var drop *episode
		if drop, terr = p.joinUnknown(join); drop != nil {
			v.runDropLocked(p, drop, nil, epoch, "marking the copy in sync had an unknown outcome")
		}
	}
	if terr != nil {
		v.logger.Error("replication: ending a join", "peer", string(node), "err", terr)
	}
	inSync := p.phase == phaseInSync
	v.mu.Unlock()

	if err != nil {
		if errors.Is(err, ErrNotOwner) {
			v.depose(err)
		}
		return fmt.Errorf("replication: marking %s in sync: %w", node, err)
	}
	if inSync {
		if err := d.Remove(); err != nil {
			v.logger.Warn("replication: removing the dirty map failed", "peer", string(node), "err", err)
		}
	}
	prog.Done = true
	v.setProgress(ctx, epoch, prog)
	v.logger.Info("replication: copy back in sync", "peer", string(node), "regions", prog.RegionsDone, "bytes", prog.BytesCopied)
	if !inSync {
		return fmt.Errorf("%w: %s failed while joining", ErrPeerFailed, node)
	}
	return nil
}

// resyncFlushBytes is how much a resync copies (or compares) between two
// flushes of the copy, which make those regions durable there and let
// their dirty bits be cleared.
const resyncFlushBytes = 64 << 20

func (v *Volume) resyncFlushEvery() int64 {
	if v.resyncFlush > 0 {
		return v.resyncFlush
	}
	return resyncFlushBytes
}

// flushResync flushes resyncing copy p, then clears the regions of d (its
// map) the resync copied (or found equal) before the flush and persists
// the map (invariant 8: a dirty mark is cleared after the flush that made
// the region durable). The flush also makes durable the writes the copy took
// since its last flush (p.unflushed). On failure the copy returns to out
// of sync with its copied regions still dirty.
func (v *Volume) flushResync(p *peer, conn Conn, epoch uint64, d *DirtyMap) error {
	v.mu.Lock()
	snap, err := p.resyncFlushStarted(conn)
	v.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %s failed during resync", ErrPeerFailed, p.node)
	}
	if res := <-v.send(conn, []*Message{{Type: MsgFlush, LUN: v.lun, Epoch: epoch}}); res.err != nil {
		// Still resyncing: the snapshot goes back to the unflushed set,
		// which the failure below merges into the map; else the copy
		// failed meanwhile, its unflushed regions were merged already,
		// and the snapshot joins the map now.
		v.mu.Lock()
		if err := p.resyncFlushFailed(conn, snap); err != nil {
			v.logger.Error("replication: a resync's flush failed", "peer", string(p.node), "err", err)
		}
		v.mu.Unlock()
		v.peerFailed(p, conn, epoch, res.err, 0, 0)
		return res.err
	}
	v.mu.Lock()
	err = p.resyncFlushed(conn)
	v.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %s failed during resync", ErrPeerFailed, p.node)
	}
	if err := d.Flush(); err != nil {
		// Lazy: a clear that does not reach the disk costs a copy later.
		v.logger.Warn("replication: persisting the cleared dirty map failed", "peer", string(p.node), "err", err)
	}
	return nil
}

// compareRegion compares region r of the owner's copy with p's and, when
// they are the same, marks r copied in p's dirty map (what the copy holds
// there may be in its cache only: the next flushResync makes it durable
// and clears it). The range lock is held from the comparison to the mark:
// a write to the region that fails on the copy marks it dirty again only
// after, which takes the copied mark away.
func (v *Volume) compareRegion(p *peer, conn Conn, epoch uint64, r int64) (bool, error) {
	off := r * v.cfg.RegionSize
	n := min(v.cfg.RegionSize, v.store.Size()-off)
	held := v.ranges.lock(off, n)
	defer v.ranges.unlock(held)
	same, err := v.verifyLocked(conn, epoch, off, n)
	if err != nil || !same {
		return false, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := p.regionSame(conn, r); err != nil {
		return false, fmt.Errorf("%w: %s failed during resync", ErrPeerFailed, p.node)
	}
	return true, nil
}

// ResyncFull marks every region of node's copy dirty (a new or wiped copy)
// and resyncs it.
func (v *Volume) ResyncFull(ctx context.Context, node NodeID) error {
	v.mu.Lock()
	p := v.peers[node]
	if p == nil || !p.canResync() {
		v.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotSyncing, node)
	}
	d := p.dirty
	v.mu.Unlock()
	d.SetAll()
	if err := d.Flush(); err != nil {
		return err
	}
	return v.Resync(ctx, node)
}

// copyRegion sends region r of the owner's copy to p and marks it copied
// (the next flushResync clears it).
func (v *Volume) copyRegion(p *peer, conn Conn, epoch uint64, r int64) error {
	off := r * v.cfg.RegionSize
	n := min(v.cfg.RegionSize, v.store.Size()-off)
	held := v.ranges.lock(off, n)
	defer v.ranges.unlock(held)

	buf := make([]byte, n)
	if _, err := v.store.ReadAt(buf, off); err != nil {
		v.abortResync(p, conn)
		return fmt.Errorf("replication: reading region %d for resync: %w", r, err)
	}
	v.mu.Lock()
	if err := v.servingLocked(); err != nil {
		v.mu.Unlock()
		return err
	}
	// The range lock keeps writes off the region, so what was read is
	// what the copy gets. Sequence numbers are assigned and sent under
	// v.mu, so each connection carries them in increasing order. The
	// mark comes before the send: a write to the region that fails on
	// the copy after it marks the region again, which takes it away.
	if err := p.regionSent(conn, r); err != nil {
		v.mu.Unlock()
		return fmt.Errorf("%w: %s failed during resync", ErrPeerFailed, p.node)
	}
	var msgs []*Message
	for pos := int64(0); pos < n; pos += int64(v.cfg.MaxMessage) {
		end := min(n, pos+int64(v.cfg.MaxMessage))
		v.seq++
		msgs = append(msgs, &Message{Type: MsgWrite, Flags: FlagResync, LUN: v.lun, Epoch: epoch, Seq: v.seq, Offset: off + pos, Length: uint64(end - pos), Payload: buf[pos:end]})
	}
	ch := v.send(conn, msgs)
	v.mu.Unlock()

	if res := <-ch; res.err != nil {
		v.peerFailed(p, conn, epoch, res.err, off, n)
		return res.err
	}
	return nil
}

// peerFailed handles a failed request to copy p outside the write path
// (resync, repair, probe): a stale epoch deposes the owner; anything else
// fails the copy (a resyncing one returns to out of sync, an in-sync one is
// dropped through the coordinator) with the range, if any, marked dirty.
func (v *Volume) peerFailed(p *peer, conn Conn, epoch uint64, err error, off, n int64) {
	if v.deposeIfStale(err) {
		return
	}
	v.mu.Lock()
	v.failPeerLocked(p, conn, epoch, err)
	if p.dirty != nil && n > 0 {
		p.dirty.Mark(off, n)
	}
	v.mu.Unlock()
}

// abortResync returns a resyncing copy to out of sync (its writes so far
// were acknowledged by it, the map still holds what it lacks).
func (v *Volume) abortResync(p *peer, conn Conn) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if p.resyncingOn(conn) {
		v.failPeerLocked(p, conn, v.epoch, nil)
	}
}

// setProgress records prog (with its rate and ETA) and reports it to the
// coordinator. The rate counts every region the run got through, compared
// or copied: a compare resync (a write-back mirror that failed) may copy
// nothing for most of its run, and its rate and ETA read 0 until the end.
func (v *Volume) setProgress(ctx context.Context, epoch uint64, prog Progress) {
	if el := v.clock.Now().Sub(prog.Started); el > 0 {
		prog.Rate = float64(prog.BytesDone) / el.Seconds()
		if prog.Rate > 0 && prog.RegionsTotal > prog.RegionsDone {
			left := float64((prog.RegionsTotal - prog.RegionsDone) * v.cfg.RegionSize)
			prog.ETA = time.Duration(left / prog.Rate * float64(time.Second))
		}
	}
	v.mu.Lock()
	v.progress[prog.Node] = prog
	v.mu.Unlock()
	if pr, ok := v.coord.(ProgressReporter); ok {
		if err := pr.ReportProgress(ctx, v.lun, epoch, prog.Node, prog); err != nil {
			v.logger.Debug("replication: reporting resync progress failed", "err", err)
		}
	}
}

// Progress returns the last progress of a resync of node.
func (v *Volume) Progress(node NodeID) (Progress, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	p, ok := v.progress[node]
	return p, ok
}

// ResyncAll resyncs every copy that is out of sync and not being resynced,
// one after another (the cluster's control loop calls it, for example
// when a node comes back). It returns the errors of those that failed.
func (v *Volume) ResyncAll(ctx context.Context) error {
	v.mu.Lock()
	var todo []NodeID
	for _, n := range v.order {
		if v.peers[n].canResync() {
			todo = append(todo, n)
		}
	}
	v.mu.Unlock()
	var errs []error
	for _, n := range todo {
		if err := v.Resync(ctx, n); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
