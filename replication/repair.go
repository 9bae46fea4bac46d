package replication

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Repair compares node's in-sync copy with the owner's, region by region,
// like Verify, and overwrites every region that differs with the owner's
// data. It runs while IO goes on: each region is compared and repaired
// under its range lock, on the copy's own connection, so the repair is
// ordered with the writes.
//
// Two cases need it: silent corruption found by verify, and a new owner
// after a crash of the old one (Config.CheckOnOpen): the old owner may have
// sent writes to some copies and not others before it died; none of them
// was acknowledged, so the new owner's data is right, but the copies must
// agree before another failover could expose the difference.
func (v *Volume) Repair(ctx context.Context, node NodeID, opts ...VerifyOption) (VerifyReport, error) {
	rep := VerifyReport{Node: node}
	if err := v.eachRegion(ctx, &rep, opts, func(off, n int64) (bool, error) { return v.repairRegion(node, off, n) }); err != nil {
		return rep, err
	}
	v.mu.Lock()
	delete(v.unchecked, node) // compared end to end: it may fail like any other copy now
	v.mu.Unlock()
	if len(rep.Divergent) > 0 {
		v.logger.Warn("replication: repaired divergent regions of an in-sync copy", "peer", string(node), "count", len(rep.Divergent))
	}
	return rep, nil
}

// repairRegion compares one region of node's copy and rewrites it when it
// differs; it reports whether it did.
func (v *Volume) repairRegion(node NodeID, off, n int64) (bool, error) {
	held := v.ranges.lock(off, n)
	defer v.ranges.unlock(held)

	v.mu.Lock()
	if err := v.servingLocked(); err != nil {
		v.mu.Unlock()
		return false, err
	}
	p := v.peers[node]
	var conn Conn
	if p != nil {
		conn = p.inSyncConn()
	}
	if conn == nil {
		v.mu.Unlock()
		return false, fmt.Errorf("%w: %s is not an in-sync copy", ErrNotSyncing, node)
	}
	epoch := v.epoch
	v.mu.Unlock()

	res := v.send(conn, []*Message{{Type: MsgVerify, LUN: v.lun, Epoch: epoch, Offset: off, Length: uint64(n)}})
	buf := make([]byte, n)
	_, lerr := v.store.ReadAt(buf, off)
	got := <-res
	if lerr != nil {
		return false, fmt.Errorf("replication: reading region at %d for repair: %w", off, lerr)
	}
	if got.err != nil {
		v.peerFailed(p, conn, epoch, got.err, off, n)
		return false, got.err
	}
	local := regionDigest(buf)
	if bytes.Equal(got.rep.Payload, local) {
		return false, nil
	}

	v.mu.Lock()
	if err := v.servingLocked(); err != nil {
		v.mu.Unlock()
		return false, err
	}
	// Not durable on the copy before its next flush: if it fails first,
	// its cache may be gone, and the region joins its dirty map.
	if err := p.repairWrite(conn, off, n); err != nil {
		v.mu.Unlock()
		return false, fmt.Errorf("%w: %s failed during repair", ErrPeerFailed, node)
	}
	var msgs []*Message
	for pos := int64(0); pos < n; pos += int64(v.cfg.MaxMessage) {
		end := min(n, pos+int64(v.cfg.MaxMessage))
		v.seq++
		msgs = append(msgs, &Message{Type: MsgWrite, Flags: FlagResync, LUN: v.lun, Epoch: epoch, Seq: v.seq,
			Offset: off + pos, Length: uint64(end - pos), Payload: buf[pos:end]})
	}
	ch := v.send(conn, msgs)
	v.mu.Unlock()
	if got := <-ch; got.err != nil {
		v.peerFailed(p, conn, epoch, got.err, off, n)
		return false, got.err
	}
	return true, nil
}

// RepairAll repairs every in-sync copy, one after the other.
func (v *Volume) RepairAll(ctx context.Context) ([]VerifyReport, error) {
	var out []VerifyReport
	var errs []error
	for _, ps := range v.Peers() {
		if ps.State != phaseInSync.String() {
			continue
		}
		rep, err := v.Repair(ctx, ps.Node)
		out = append(out, rep)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ps.Node, err))
		}
	}
	return out, errors.Join(errs...)
}

func regionDigest(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}
