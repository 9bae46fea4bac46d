package replication

import (
	"bytes"
	"context"
	"fmt"
)

// VerifyReport is the result of an online verify of one copy.
type VerifyReport struct {
	Node          NodeID
	Regions       int64   // regions compared
	RegionsTotal  int64   // regions of the volume: what a complete run compares
	BytesCompared int64   // bytes hashed on each side
	Divergent     []int64 // regions whose SHA-256 differs
}

// VerifyOption is an option of Verify and Repair.
type VerifyOption func(*verifyOptions)

type verifyOptions struct {
	onRegion func(VerifyReport)
}

// OnRegion makes Verify or Repair call fn with the report so far after
// each region, from the goroutine that runs the comparison: fn must return
// quickly (a progress display throttles itself). The report's Divergent
// slice is shared: fn must not keep or change it.
func OnRegion(fn func(VerifyReport)) VerifyOption {
	return func(o *verifyOptions) { o.onRegion = fn }
}

// Verify compares node's copy with the owner's, region by region, with
// SHA-256 computed on each side, while IO goes on: each region is compared
// under its range lock, so no write to it is in flight on either copy. It
// reads at most ResyncRate bytes per second. It uses a connection of its
// own, without a hello (acknowledged writes were applied by the mirror before it answered,
// so ordering with the write stream does not matter).
//
// A divergent in-sync copy is a bug or silent corruption; what to do about
// it (drop and ResyncRegions, or alarm) is the caller's choice.
func (v *Volume) Verify(ctx context.Context, node NodeID, opts ...VerifyOption) (VerifyReport, error) {
	rep := VerifyReport{Node: node}
	v.mu.Lock()
	if err := v.servingLocked(); err != nil {
		v.mu.Unlock()
		return rep, err
	}
	if v.peers[node] == nil {
		v.mu.Unlock()
		return rep, fmt.Errorf("%w: %s", ErrNotSyncing, node)
	}
	epoch := v.epoch
	v.mu.Unlock()
	// No hello: its sequence floor would refuse writes still in flight
	// on the main connection. The verify requests carry the epoch.
	conn, err := v.tr.Dial(ctx, node)
	if err != nil {
		return rep, err
	}
	defer conn.Close()
	err = v.eachRegion(ctx, &rep, opts, func(off, n int64) (bool, error) {
		same, err := v.verifyRegion(conn, epoch, off, n)
		if err != nil {
			v.deposeIfStale(err)
		}
		return !same, err
	})
	if err != nil {
		return rep, err
	}
	if len(rep.Divergent) > 0 {
		v.logger.Warn("replication: verify found divergent regions", "peer", string(node), "count", len(rep.Divergent))
	}
	return rep, nil
}

func (v *Volume) verifyRegion(conn Conn, epoch uint64, off, n int64) (bool, error) {
	held := v.ranges.lock(off, n)
	defer v.ranges.unlock(held)
	return v.verifyLocked(conn, epoch, off, n)
}

// verifyLocked is verifyRegion for a caller that holds the range lock.
func (v *Volume) verifyLocked(conn Conn, epoch uint64, off, n int64) (bool, error) {
	if err := v.serving(); err != nil {
		return false, err
	}
	res := v.send(conn, []*Message{{Type: MsgVerify, LUN: v.lun, Epoch: epoch, Offset: off, Length: uint64(n)}})
	local, err := regionSum(v.store, off, n)
	r := <-res
	if err != nil {
		return false, err
	}
	if r.err != nil {
		return false, r.err
	}
	return bytes.Equal(r.rep.Payload, local[:]), nil
}

// eachRegion calls check for every region of the volume in order, at most
// ResyncRate bytes per second, and counts the regions into rep: Divergent
// lists those for which check returned true. It stops at the first error.
// An OnRegion option hears of each region done.
func (v *Volume) eachRegion(ctx context.Context, rep *VerifyReport, opts []VerifyOption, check func(off, n int64) (bool, error)) error {
	var o verifyOptions
	for _, opt := range opts {
		opt(&o)
	}
	size, rs := v.store.Size(), v.cfg.RegionSize
	rep.RegionsTotal = (size + rs - 1) / rs
	for r := int64(0); r*rs < size; r++ {
		if err := v.limit.wait(ctx, rs); err != nil {
			return err
		}
		off := r * rs
		n := min(rs, size-off)
		differs, err := check(off, n)
		if err != nil {
			return err
		}
		rep.Regions++
		rep.BytesCompared += n
		if differs {
			rep.Divergent = append(rep.Divergent, r)
		}
		if o.onRegion != nil {
			o.onRegion(*rep)
		}
	}
	return nil
}
