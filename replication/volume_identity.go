package replication

import (
	"context"
	"fmt"
)

// Copy identities on the owner's side (invariant 7). With a coordinator
// that records identities (View.Gens not nil):
//
//   - Open checks the owner's own copy: it must hold the generation the
//     view recorded for this node, or Open fails with ErrWrongCopy and the
//     volume never serves. A fresh LUN's owner gives its copy a new
//     generation; the owner of a LUN from before identities (none
//     recorded for it) keeps the one its copy has, or gives it one; both
//     are recorded before the volume serves.
//   - Open greets every in-sync copy; a fresh LUN's copies get a new
//     generation each in the hello, recorded with the owner's. Any other
//     copy must report the generation the view recorded for it: one that
//     reports another, or none, is dropped through the coordinator like a
//     failed copy, with every region dirty.
//   - Resync greets the copy too. A full copy (every region dirty) gives
//     it a new generation at its start; an incremental one goes on only if
//     the copy reports the recorded generation (or the one this volume
//     gave it at an earlier full copy), else it becomes a full copy. The
//     copy's generation is recorded with its join (MarkInSync).
//
// A copy that has no generation where one was recorded is a blank
// replacement: its full copy copies every region. One that has another
// generation (a restored backup), or none where none was recorded (a copy
// from before identities), may be mostly right: its full copy compares
// each region and copies only those that differ.

// genName is g for messages: its hex digits, or "none".
func genName(g Generation) string {
	if g.IsZero() {
		return "none"
	}
	return g.String()
}

// ownIdentity checks the owner's own copy against view (see above) and
// returns the generations Open must record before serving: nil when the
// coordinator records no identities, else a map holding this node's new
// generation when it needs recording. It fails with an error wrapping
// ErrWrongCopy when the copy is not the one the view recorded.
func (v *Volume) ownIdentity(view View) (map[NodeID]Generation, error) {
	if view.Gens == nil {
		return nil, nil
	}
	record := map[NodeID]Generation{}
	own := storeGeneration(v.store)
	want := view.Gens[v.self]
	var g Generation
	switch {
	case view.Fresh:
		g = NewGeneration()
	case want.IsZero() && !own.IsZero():
		// A LUN from before identities, whose owner's copy has one
		// nobody recorded (a half-finished Open): the in-sync set is all
		// there is to go by, as before identities.
		record[v.self] = own
		return record, nil
	case want.IsZero():
		g = NewGeneration()
	case own == want:
		return record, nil
	default:
		return nil, fmt.Errorf("%w: LUN %d: this node's copy has generation %s, the cluster recorded %s for it (a replaced or blank disk, a restored backup): not serving it",
			ErrWrongCopy, v.lun, genName(own), genName(want))
	}
	is, ok := v.store.(IdentityStore)
	if !ok {
		return nil, fmt.Errorf("replication: LUN %d: the cluster records copy identities, but this node's store keeps none (serve it through a CopyStore)", v.lun)
	}
	if err := is.SetGeneration(g); err != nil {
		return nil, err
	}
	v.logger.Info("replication: the owner's copy has a new generation", "generation", g.String(), "fresh", view.Fresh)
	record[v.self] = g
	return record, nil
}

// peerIdentity checks what in-sync copy node reported at Open: sent is
// the new generation the hello gave it (a fresh LUN), got the one it
// reported. It returns nil when the copy is the one view recorded (or
// took sent), else an error wrapping ErrWrongCopy and ErrPeerFailed.
func peerIdentity(view View, node NodeID, sent, got Generation) error {
	want := view.Gens[node]
	switch {
	case view.Gens == nil:
		return nil
	case !sent.IsZero():
		if got == sent {
			return nil
		}
		return fmt.Errorf("%w (%w): %s did not take the generation %s (it reports %s): a build or store without copy identities",
			ErrWrongCopy, ErrPeerFailed, node, sent, genName(got))
	case !want.IsZero() && got == want:
		return nil
	}
	return fmt.Errorf("%w (%w): %s's copy has generation %s, the cluster recorded %s for it",
		ErrWrongCopy, ErrPeerFailed, node, genName(got), genName(want))
}

// wrongCopyLocked marks every region of p, a copy that is not the one
// the cluster recorded (want) and reported got: a full copy, comparing
// each region first unless the copy is blank (none where one was
// recorded). The map is persisted by the drop that failPeerLocked
// started, or by the caller. Callers hold v.mu.
func (v *Volume) wrongCopyLocked(p *peer, want, got Generation) {
	if err := p.wrongCopy(!got.IsZero() || want.IsZero()); err != nil {
		v.logger.Error("replication: marking a wrong copy", "peer", string(p.node), "err", err)
	}
}

// resyncHello greets p's copy for a resync in epoch and checks its
// identity (see above). It returns the connection and the generation to
// record when the copy joins: the new one a full copy gave it, or the one
// an incremental resync found (zero when the coordinator records no
// identities). A copy that is not the one the dirty map describes gets
// every region marked, and the hello is made again as a full copy's.
func (v *Volume) resyncHello(ctx context.Context, p *peer, epoch uint64) (Conn, Generation, error) {
	d := p.dirty
	for {
		v.mu.Lock()
		identity := v.gens != nil
		known := v.gens[p.node]
		wrote := p.wroteGen
		v.mu.Unlock()
		var flags uint8
		var gen Generation
		full := d.Count() == d.Regions()
		if full {
			flags = FlagFull // every region will be rewritten: a lost copy may take it
			if identity {
				gen = NewGeneration()
			}
		}
		conn, got, err := v.helloGen(ctx, p.node, epoch, flags, gen)
		if err != nil || !identity {
			return conn, Generation{}, err
		}
		if full {
			if got != gen {
				conn.Close()
				return nil, Generation{}, fmt.Errorf("%w (%w): %s did not take the generation %s of its full copy (it reports %s): a build or store without copy identities",
					ErrWrongCopy, ErrPeerFailed, p.node, gen, genName(got))
			}
			v.mu.Lock()
			err := p.gaveGeneration(gen)
			v.mu.Unlock()
			if err != nil {
				conn.Close()
				return nil, Generation{}, fmt.Errorf("%w: %s: %w", ErrNotSyncing, p.node, err)
			}
			return conn, gen, nil
		}
		// The view this node applied is at least as new as the
		// watched one.
		if cur, err := v.coord.View(ctx, v.lun); err == nil && cur.Epoch == epoch {
			known = cur.Gens[p.node]
		}
		if !got.IsZero() && (got == known || got == wrote) {
			return conn, got, nil
		}
		conn.Close()
		v.logger.Warn("replication: the out-of-sync copy is not the one its dirty map describes; it gets a full copy",
			"peer", string(p.node), "generation", genName(got), "recorded", genName(known))
		v.mu.Lock()
		v.wrongCopyLocked(p, known, got)
		v.mu.Unlock()
		if err := d.Flush(); err != nil {
			return nil, Generation{}, fmt.Errorf("replication: persisting the dirty map of %s: %w", p.node, err)
		}
	}
}
