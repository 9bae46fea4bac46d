package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
)

// Persistent reservations are cluster-wide (DESIGN.md, "High availability
// as the initiator sees it"): the state of each LUN's reservations
// (registrations, the reservation, PRGENERATION, APTPL) lives in Raft, in
// LUN.Reservations, so that a PERSISTENT RESERVE OUT through any node's
// port is seen and enforced by every node, and a new owner after a
// failover enforces what the last one did. The cluster keeps the state
// opaque (the SCSI layer's JSON encoding) and orders the changes: each
// lun.set_reservations names the version it was computed from (compare
// and set), and every node hears of every change in commit order
// (FSM.OnReservations) to deliver its unit attentions to its own I_T
// nexuses.

// CmdLUNSetReservations replaces a LUN's reservation state.
const CmdLUNSetReservations = "lun.set_reservations"

// maxReservationsState bounds the encoded state of one LUN's reservations
// (a registration is ~150 bytes: thousands of them fit).
const maxReservationsState = 1 << 20

// ErrStaleReservations refuses a lun.set_reservations computed from a
// version that is no longer the LUN's: the proposer reads the new state
// and computes its change again.
var ErrStaleReservations = &Error{Code: "stale_reservations", Message: "the LUN's reservations changed since they were read"}

// LUNSetReservations replaces the reservation state of a LUN: a node
// proposes it for a PERSISTENT RESERVE OUT that one of its ports received.
// Version must be the LUN's ReservationsVersion (the state was computed
// from it), ID the LUN's ID. Origin names the proposal (its node and a
// counter of that node) so that the proposer knows its own change when it
// is applied. State is a JSON object (at most 1 MiB).
type LUNSetReservations struct {
	IQN     string          `json:"iqn"`
	LUN     uint64          `json:"lun"`
	ID      uint64          `json:"id"`
	Version uint64          `json:"version"`
	Origin  string          `json:"origin"`
	State   json.RawMessage `json:"state"`
}

// ReservationsChange is one applied lun.set_reservations, as
// FSM.OnReservations hands it to its hooks.
type ReservationsChange struct {
	IQN     string
	LUN     uint64
	ID      uint64
	Version uint64 // the LUN's ReservationsVersion after the change
	Origin  string
	State   json.RawMessage // not to be modified
}

func (s *State) applySetReservations(p *LUNSetReservations) (*ReservationsChange, error) {
	t, err := s.target(p.IQN)
	if err != nil {
		return nil, err
	}
	l, ok := t.LUNs[p.LUN]
	switch {
	case !ok:
		return nil, errf(ErrUnknownLUN, "no LUN %d on %s", p.LUN, p.IQN)
	case p.ID == 0 || l.ID != p.ID:
		return nil, errf(ErrUnknownLUN, "LUN %d on %s has ID %d, not %d", l.LUN, l.Target, l.ID, p.ID)
	case p.Version != l.ReservationsVersion:
		return nil, errf(ErrStaleReservations, "the reservations of LUN %d on %s are at version %d, not %d", p.LUN, p.IQN, l.ReservationsVersion, p.Version)
	case len(p.State) > maxReservationsState:
		return nil, errf(ErrInvalid, "the reservation state of LUN %d on %s is %d bytes, more than %d", p.LUN, p.IQN, len(p.State), maxReservationsState)
	case !json.Valid(p.State) || !bytes.HasPrefix(bytes.TrimSpace(p.State), []byte("{")):
		return nil, errf(ErrInvalid, "the reservation state of LUN %d on %s is not a JSON object", p.LUN, p.IQN)
	}
	l.Reservations = slices.Clone(p.State)
	l.ReservationsVersion++
	return &ReservationsChange{IQN: l.Target, LUN: l.LUN, ID: l.ID, Version: l.ReservationsVersion,
		Origin: p.Origin, State: l.Reservations}, nil
}

// reservationHooks are the FSM's OnReservations hooks.
type reservationHooks struct {
	mu    sync.Mutex
	next  int
	hooks map[int]func(ReservationsChange)
}

// OnReservations registers fn, which the FSM calls with every
// lun.set_reservations it applies, in commit order and never concurrently,
// with the FSM locked, before the entry counts as applied (a WaitApplied
// for it returns after fn did): fn must not block and must not call the
// FSM. A Restore calls nothing: a hook that must not miss a state reads
// the LUN after registering. cancel unregisters fn.
func (f *FSM) OnReservations(fn func(ReservationsChange)) (cancel func()) {
	h := &f.resvHooks
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hooks == nil {
		h.hooks = map[int]func(ReservationsChange){}
	}
	id := h.next
	h.next++
	h.hooks[id] = fn
	return func() {
		h.mu.Lock()
		delete(h.hooks, id)
		h.mu.Unlock()
	}
}

// takeReservationsApplied calls the hooks with the change the command
// just applied made, if any (f.mu held).
func (f *FSM) takeReservationsApplied() {
	c := f.resvApplied
	if c == nil {
		return
	}
	f.resvApplied = nil
	h := &f.resvHooks
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, fn := range h.hooks {
		fn(*c)
	}
}

// reservationsSummary is what status shows of a LUN's reservation state:
// the fields of the SCSI layer's encoding it needs.
type reservationsSummary struct {
	Generation    uint32 `json:"generation"`
	Registrations []struct {
		Initiator string `json:"initiator"`
		Key       uint64 `json:"key"`
	} `json:"registrations"`
	Reservation *struct {
		Holder struct {
			Initiator string `json:"initiator"`
		} `json:"holder"`
		Type int `json:"type"`
	} `json:"reservation"`
}

// reservationTypeNames are SPC-4's persistent reservation types.
var reservationTypeNames = map[int]string{
	1: "Write Exclusive", 3: "Exclusive Access",
	5: "Write Exclusive, Registrants Only", 6: "Exclusive Access, Registrants Only",
	7: "Write Exclusive, All Registrants", 8: "Exclusive Access, All Registrants",
}

// describeReservations says in one line who holds l's reservation and how
// many registrations it has; "" for none.
func describeReservations(l *LUN) string {
	if len(l.Reservations) == 0 {
		return ""
	}
	var r reservationsSummary
	if err := json.Unmarshal(l.Reservations, &r); err != nil {
		return "unreadable: " + err.Error()
	}
	if len(r.Registrations) == 0 && r.Reservation == nil {
		return ""
	}
	regs := fmt.Sprintf("%d registrations", len(r.Registrations))
	if len(r.Registrations) == 1 {
		regs = "1 registration"
	}
	if r.Reservation == nil {
		return fmt.Sprintf("not reserved; %s (generation %d)", regs, r.Generation)
	}
	name := reservationTypeNames[r.Reservation.Type]
	if name == "" {
		name = fmt.Sprintf("type %d", r.Reservation.Type)
	}
	return fmt.Sprintf("%s, held by %s; %s (generation %d)", name, r.Reservation.Holder.Initiator, regs, r.Generation)
}

// writeReservations writes a line for each LUN with registrations.
func writeReservations(w io.Writer, s Status) {
	header := false
	for _, t := range s.Targets {
		for _, l := range t.LUNs {
			d := describeReservations(&l.LUN)
			if d == "" {
				continue
			}
			if !header {
				fmt.Fprintln(w, "\nPERSISTENT RESERVATIONS")
				header = true
			}
			fmt.Fprintf(w, "%s LUN %d: %s\n", t.IQN, l.LUN.LUN, d)
		}
	}
}
