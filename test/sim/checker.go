package sim

import (
	"fmt"
	"sort"
	"time"
)

// LUNMode says what a LUN promises about acknowledged writes.
type LUNMode struct {
	// Strict: every acknowledged write is durable (IO mode
	// write-through). Otherwise (write-back) only FUA writes, and writes
	// acknowledged before a SYNCHRONIZE CACHE on the LUN was sent that
	// then succeeded, must survive a power loss; the others may be lost
	// if every copy that had them lost power.
	Strict bool
}

// Final is what a block holds once the cluster healed: its version, or
// the reason it holds none.
type Final struct {
	Version uint64
	Err     error
}

// Report is the checker's verdict on a run.
type Report struct {
	Writes, AckedWrites, Reads, AckedReads int
	Lost                                   []string // acknowledged (and, write-back, durable) writes the final state lacks
	Stale                                  []string // reads older than a write acknowledged before they were sent
	Garbage                                []string // blocks or reads that hold no version that was ever written
	TwoEpochs                              []string // writes acknowledged in an epoch after a newer one took writes
	NoEpoch                                []string // acknowledged writes no owner reported (the write hook)
	Divergence                             []string // copies not identical after healing (filled by the harness)
	Unhealed                               []string // faults the cluster did not heal from (filled by the harness)
	Reservations                           []string // persistent reservations not as made (filled by the harness)
}

// Failed reports whether any invariant broke.
func (r *Report) Failed() bool {
	return len(r.Lost)+len(r.Stale)+len(r.Garbage)+len(r.TwoEpochs)+len(r.NoEpoch)+len(r.Divergence)+len(r.Unhealed)+len(r.Reservations) > 0
}

// Summary is one line of counts.
func (r *Report) Summary() string {
	return fmt.Sprintf("writes acknowledged %d/%d, reads %d/%d, lost %d, stale reads %d, garbage %d, two epochs %d, divergent copies %d, unhealed %d, reservations lost %d",
		r.AckedWrites, r.Writes, r.AckedReads, r.Reads, len(r.Lost), len(r.Stale), len(r.Garbage), len(r.TwoEpochs), len(r.Divergence), len(r.Unhealed), len(r.Reservations))
}

// Problems lists every violation (at most max of each kind).
func (r *Report) Problems(max int) []string {
	var out []string
	for _, g := range []struct {
		what string
		l    []string
	}{{"lost", r.Lost}, {"stale read", r.Stale}, {"garbage", r.Garbage}, {"two epochs", r.TwoEpochs},
		{"no epoch", r.NoEpoch}, {"divergent", r.Divergence}, {"unhealed", r.Unhealed}, {"reservation", r.Reservations}} {
		for i, s := range g.l {
			if i == max {
				out = append(out, fmt.Sprintf("%s: ... %d more", g.what, len(g.l)-max))
				break
			}
			out = append(out, g.what+": "+s)
		}
	}
	return out
}

type blockKey struct {
	lun   int
	block uint64
}

// Check judges a history against the final state of every block written
// (final, read from the healed cluster) under the LUNs' modes:
//
//   - no acknowledged write lost: each block holds its last acknowledged
//     (write-back: durable) version or a later one that was sent;
//   - no stale read: a read returns no version older than one
//     acknowledged (write-back: durable) before the read was sent;
//   - nothing but written versions: every read and every final block
//     holds a version some write sent (or the initial zeros);
//   - one epoch takes writes at a time: no write is acknowledged in an
//     epoch after a write of a newer epoch of the LUN was acknowledged
//     before it was sent.
func Check(ops []Op, epochs map[writeKey]uint64, final map[blockKey]Final, modes []LUNMode) *Report {
	r := &Report{}
	sent := map[blockKey]map[uint64]bool{}
	type ack struct {
		version uint64
		at      time.Time
	}
	durableAcks := map[blockKey][]ack{} // acknowledged writes that must survive, by completion
	var writes []Op
	// Flushes that succeeded, per LUN: a write-back write acknowledged
	// before one was sent is durable.
	flushSent := map[int][]time.Time{}
	for _, op := range ops {
		if op.Kind == OpFlush && op.Outcome == OK {
			flushSent[op.LUN] = append(flushSent[op.LUN], op.Invoke)
		}
	}
	for _, ts := range flushSent {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	}
	durable := func(op Op) bool {
		if op.LUN < len(modes) && modes[op.LUN].Strict || op.FUA {
			return true
		}
		ts := flushSent[op.LUN]
		i := sort.Search(len(ts), func(i int) bool { return ts[i].After(op.Done) })
		return i < len(ts)
	}
	for _, op := range ops {
		k := blockKey{op.LUN, op.Block}
		switch op.Kind {
		case OpWrite:
			r.Writes++
			if sent[k] == nil {
				sent[k] = map[uint64]bool{0: true}
			}
			sent[k][op.Version] = true
			if op.Outcome != OK {
				continue
			}
			r.AckedWrites++
			writes = append(writes, op)
			if durable(op) {
				durableAcks[k] = append(durableAcks[k], ack{op.Version, op.Done})
			}
			if _, ok := epochs[writeKey{op.LUN, op.Block, op.Version}]; !ok {
				r.NoEpoch = append(r.NoEpoch, op.String())
			}
		case OpRead:
			r.Reads++
			if op.Outcome == OK {
				r.AckedReads++
			}
		}
	}
	// Reads.
	for _, op := range ops {
		if op.Kind != OpRead || op.Outcome != OK {
			continue
		}
		k := blockKey{op.LUN, op.Block}
		if op.Version != 0 && !sent[k][op.Version] {
			r.Garbage = append(r.Garbage, fmt.Sprintf("%s: version %d was never written", op.String(), op.Version))
			continue
		}
		var newest uint64
		for _, a := range durableAcks[k] {
			if a.at.Before(op.Invoke) && a.version > newest {
				newest = a.version
			}
		}
		if op.Version < newest {
			r.Stale = append(r.Stale, fmt.Sprintf("%s, sent after v%d was acknowledged", op.String(), newest))
		}
	}
	// Final state.
	keys := make([]blockKey, 0, len(final))
	for k := range final {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].lun != keys[j].lun {
			return keys[i].lun < keys[j].lun
		}
		return keys[i].block < keys[j].block
	})
	for _, k := range keys {
		f := final[k]
		if f.Err != nil {
			r.Garbage = append(r.Garbage, fmt.Sprintf("lun%d block %d after healing: %v", k.lun, k.block, f.Err))
			continue
		}
		if f.Version != 0 && !sent[k][f.Version] {
			r.Garbage = append(r.Garbage, fmt.Sprintf("lun%d block %d after healing holds v%d, never written", k.lun, k.block, f.Version))
			continue
		}
		var newest uint64
		for _, a := range durableAcks[k] {
			newest = max(newest, a.version)
		}
		if f.Version < newest {
			r.Lost = append(r.Lost, fmt.Sprintf("lun%d block %d holds v%d after healing; v%d was acknowledged", k.lun, k.block, f.Version, newest))
		}
	}
	for k, acks := range durableAcks {
		if _, ok := final[k]; !ok && len(acks) > 0 {
			r.Lost = append(r.Lost, fmt.Sprintf("lun%d block %d: acknowledged writes but no final state read", k.lun, k.block))
		}
	}
	// Epochs: for each LUN, the earliest acknowledgement in each epoch;
	// a write of epoch e must not be sent after an ack of a newer epoch
	// and still be acknowledged.
	firstAck := map[int]map[uint64]time.Time{}
	for _, w := range writes {
		e, ok := epochs[writeKey{w.LUN, w.Block, w.Version}]
		if !ok {
			continue
		}
		if firstAck[w.LUN] == nil {
			firstAck[w.LUN] = map[uint64]time.Time{}
		}
		if t, ok := firstAck[w.LUN][e]; !ok || w.Done.Before(t) {
			firstAck[w.LUN][e] = w.Done
		}
	}
	for _, w := range writes {
		e, ok := epochs[writeKey{w.LUN, w.Block, w.Version}]
		if !ok {
			continue
		}
		for e2, t := range firstAck[w.LUN] {
			if e2 > e && t.Before(w.Invoke) {
				r.TwoEpochs = append(r.TwoEpochs, fmt.Sprintf("%s acknowledged in epoch %d, sent after epoch %d acknowledged a write", w.String(), e, e2))
				break
			}
		}
	}
	sort.Strings(r.Lost)
	return r
}
