package scsi

// Persistent reservations (SPC-4 5.13) and SPC-2 RESERVE/RELEASE.
//
// The persistent state (registrations, the reservation, PRGENERATION,
// APTPL) lives behind ReservationStore; every PERSISTENT RESERVE OUT is one
// Update whose callback is a pure function of the state (prTransition), so
// a replicated store can retry or replay it. A registration is per I_T
// nexus: initiator port (iSCSI name + ISID) and relative target port, or
// every port of an initiator device (TransportID format 00b) or every
// target port (ALL_TG_PT). The unit attentions and aborts a transition
// causes travel in PRState.Events and are delivered by each LU to the
// nexuses it knows. The SPC-2 reservation is node-local: any reset or
// nexus loss ends it.
//
// Invariants: a reservation always has a registered holder (for the All
// Registrants types: at least one registration); PRGENERATION changes
// only with registrations; the gate reads one immutable snapshot per
// command.

import (
	"encoding/binary"
	"fmt"
	"sync"
)

// Operation codes and service actions of this area.
const (
	opcPRIn       = 0x5e
	opcPROut      = 0x5f
	opcReserve6   = 0x16
	opcRelease6   = 0x17
	opcReserve10  = 0x56
	opcRelease10  = 0x57
	prinReadKeys  = 0x00
	prinReadResv  = 0x01
	prinReportCap = 0x02
	prinFullStat  = 0x03
)

func reservationCommands() []opInfo {
	prFlags := opAllowedUnderPR | opNoMedium | opAllowedStandby
	var ops []opInfo
	for _, s := range []struct {
		sa   uint16
		name string
		fn   handlerFunc
	}{
		{prinReadKeys, "PERSISTENT RESERVE IN/READ KEYS", prInReadKeys},
		{prinReadResv, "PERSISTENT RESERVE IN/READ RESERVATION", prInReadReservation},
		{prinReportCap, "PERSISTENT RESERVE IN/REPORT CAPABILITIES", prInReportCapabilities},
		{prinFullStat, "PERSISTENT RESERVE IN/READ FULL STATUS", prInReadFullStatus},
	} {
		ops = append(ops, opInfo{name: s.name, opcode: opcPRIn, sa: s.sa, hasSA: true, cdbLen: 10,
			usage: []byte{opcPRIn, byte(s.sa), 0, 0, 0, 0, 0, 0xff, 0xff, 0},
			flags: prFlags, fn: s.fn})
	}
	for sa, name := range []string{"REGISTER", "RESERVE", "RELEASE", "CLEAR", "PREEMPT",
		"PREEMPT AND ABORT", "REGISTER AND IGNORE EXISTING KEY", "REGISTER AND MOVE"} {
		ops = append(ops, opInfo{name: "PERSISTENT RESERVE OUT/" + name, opcode: opcPROut, sa: uint16(sa), hasSA: true,
			cdbLen: 10, usage: []byte{opcPROut, byte(sa), 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0},
			flags: prFlags, fn: prOut})
	}
	ops = append(ops,
		opInfo{name: "RESERVE(6)", opcode: opcReserve6, cdbLen: 6, usage: []byte{opcReserve6, 0, 0, 0, 0, 0},
			flags: opNoMedium, fn: reserveSPC2},
		opInfo{name: "RELEASE(6)", opcode: opcRelease6, cdbLen: 6, usage: []byte{opcRelease6, 0, 0, 0, 0, 0},
			flags: opNoMedium | opAllowedRR, fn: releaseSPC2},
		opInfo{name: "RESERVE(10)", opcode: opcReserve10, cdbLen: 10, usage: []byte{opcReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			flags: opNoMedium, fn: reserveSPC2},
		opInfo{name: "RELEASE(10)", opcode: opcRelease10, cdbLen: 10, usage: []byte{opcRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			flags: opNoMedium | opAllowedRR, fn: releaseSPC2},
	)
	return ops
}

// prState is the per-LU state of persistent reservations and SPC-2
// RESERVE/RELEASE. The persistent part lives in the ReservationStore; the
// SPC-2 reservation is local to this node (it is released by any reset
// or I_T nexus loss, so it never needs to survive one).
type prState struct {
	store ReservationStore
	ptpl  bool // store keeps APTPL state through a power loss

	mu sync.RWMutex
	// nexuses maps the key of every I_T nexus seen by the gate or a PR
	// command to its identity, to deliver unit attentions to the nexuses a
	// registration covers.
	nexuses map[string]prNexusID
	// pruneAt is the registry size at which the gate next drops the
	// nexuses the LU has forgotten.
	pruneAt int
	// spc2Holder is the key of the I_T nexus holding an SPC-2 RESERVE, or
	// "" for none.
	spc2Holder string
}

func (s *prState) init(lu *LU) error {
	s.store = lu.cfg.Reservations
	if s.store == nil {
		s.store = NewMemoryReservationStore()
	}
	if p, ok := s.store.(PowerLossPersister); ok {
		s.ptpl = p.PersistsThroughPowerLoss()
	}
	s.nexuses = map[string]prNexusID{}
	s.pruneAt = 64
	if w, ok := s.store.(ReservationWatcher); ok {
		w.Watch(lu.reservationsChangedElsewhere)
	}
	return nil
}

// taskNexus returns the I_T nexus of t (an empty one if the transport gave
// none).
func taskNexus(t *task) *Nexus {
	if t.nexus != nil {
		return t.nexus
	}
	if t.cmd != nil && t.cmd.Nexus != nil {
		return t.cmd.Nexus
	}
	return &Nexus{}
}

// note records n and returns its key and PR identity.
func (s *prState) note(n *Nexus) (string, prNexusID) {
	k := n.Key()
	s.mu.RLock()
	id, ok := s.nexuses[k]
	s.mu.RUnlock()
	if ok {
		return k, id
	}
	id = prIDOf(n)
	s.mu.Lock()
	s.nexuses[k] = id
	s.mu.Unlock()
	return k, id
}

// loadSynced is load for PERSISTENT RESERVE IN: a store shared by several
// nodes first catches up with every change committed before the command
// (ReservationSyncer), so that what one node committed is read through
// any other.
func (s *prState) loadSynced() (*PRState, error) {
	if sy, ok := s.store.(ReservationSyncer); ok {
		if err := sy.Sync(); err != nil {
			return nil, err
		}
	}
	return s.load()
}

// load returns the current PR state.
func (s *prState) load() (*PRState, error) {
	st, err := s.store.Load()
	if err != nil {
		return nil, fmt.Errorf("scsi: load reservations: %w", err)
	}
	return st, nil
}

// prAlwaysAllowed lists commands that table 69 of SPC-4 (and SBC-3 table
// 13) allow from any I_T nexus under any persistent reservation, keyed by
// opcode, whatever flags the opcode table gives them. The PR commands
// themselves check the reservation key.
var prAlwaysAllowed = map[byte]bool{
	0x00:     true, // TEST UNIT READY
	0x03:     true, // REQUEST SENSE
	0x12:     true, // INQUIRY
	0x25:     true, // READ CAPACITY(10)
	0x4d:     true, // LOG SENSE
	0xa0:     true, // REPORT LUNS
	opcPRIn:  true,
	opcPROut: true,
}

// prAllowedByCDB covers the entries of table 69 that depend on CDB
// fields: MAINTENANCE IN reports, READ CAPACITY(16), and START STOP UNIT
// with START=1 and POWER CONDITION=0.
func prAllowedByCDB(cdb []byte) bool {
	switch cdb[0] {
	case 0xa3: // MAINTENANCE IN: REPORT IDENTIFYING INFORMATION, TPG, opcodes, TMFs, timestamp
		switch cdb[1] & 0x1f {
		case 0x05, 0x0a, 0x0c, 0x0d, 0x0f:
			return true
		}
	case 0x9e: // SERVICE ACTION IN(16)
		return cdb[1]&0x1f == 0x10 // READ CAPACITY(16)
	case 0x1b: // START STOP UNIT
		return len(cdb) > 4 && cdb[4]&0x01 != 0 && cdb[4]>>4 == 0
	}
	return false
}

// spc2AlwaysAllowed lists commands a nexus may send while another holds
// an SPC-2 reservation (SPC-2 5.5.1): INQUIRY, REPORT LUNS, REQUEST SENSE
// and RELEASE (which then does nothing).
var spc2AlwaysAllowed = map[byte]bool{
	0x03:         true,
	0x12:         true,
	0xa0:         true,
	opcRelease6:  true,
	opcRelease10: true,
}

// reservationGate returns ErrReservationConflict when the persistent or
// SPC-2 reservation of the LU forbids t from its nexus (SPC-4 5.13.1,
// table 69). It runs in the gate chain before every command.
func (lu *LU) reservationGate(t *task) error {
	if t.op == nil || len(t.cdb) == 0 {
		return nil
	}
	p := &lu.pr
	k, id := p.note(taskNexus(t))
	p.mu.RLock()
	prune := len(p.nexuses) > p.pruneAt
	p.mu.RUnlock()
	if prune {
		n := len(p.knownNexuses(lu))
		p.mu.Lock()
		p.pruneAt = 2*n + 64
		p.mu.Unlock()
	}
	opc, flags := t.cdb[0], t.op.flags

	if holder := lu.spc2HolderOf(); holder != "" && holder != k && flags&opAllowedRR == 0 && !spc2AlwaysAllowed[opc] {
		return ErrReservationConflict
	}

	st, err := p.load()
	if err != nil {
		return err
	}
	r := st.Reservation
	if r == nil {
		return nil
	}
	if i := st.find(id); i >= 0 && (st.isHolder(i) || r.Type.registrantsOnly()) {
		return nil
	}
	if flags&opAllowedUnderPR != 0 || prAlwaysAllowed[opc] || prAllowedByCDB(t.cdb) {
		return nil
	}
	if r.Type.writeExclusive() && flags&opReadLike != 0 {
		return nil
	}
	return ErrReservationConflict
}

// prInAlloc returns the ALLOCATION LENGTH of a PERSISTENT RESERVE IN CDB.
func prInAlloc(t *task) int { return int(binary.BigEndian.Uint16(t.cdb[7:9])) }

// prInHeader returns the 8-byte header every PR IN answer starts with:
// PRGENERATION and the ADDITIONAL LENGTH (filled by prInFinish).
func prInHeader(st *PRState) []byte {
	b := make([]byte, 8, 64)
	binary.BigEndian.PutUint32(b[0:4], st.Generation)
	return b
}

// prInFinish sets ADDITIONAL LENGTH and returns b truncated to the
// allocation length (SPC-4 6.15.1: the length fields are not changed by
// truncation).
func prInFinish(t *task, b []byte) error {
	binary.BigEndian.PutUint32(b[4:8], uint32(len(b)-8))
	t.dataIn(b, prInAlloc(t))
	return nil
}

// prInReadKeys answers READ KEYS (SPC-4 6.15.2): every registered key.
func prInReadKeys(t *task) error {
	st, err := t.lu.pr.loadSynced()
	if err != nil {
		return err
	}
	t.lu.pr.note(taskNexus(t))
	b := prInHeader(st)
	for _, r := range st.Registrations {
		b = binary.BigEndian.AppendUint64(b, r.Key)
	}
	return prInFinish(t, b)
}

// holderKey returns the reservation key READ RESERVATION reports: zero
// for the All Registrants types (SPC-4 6.15.3.2), the holder's key
// otherwise.
func (st *PRState) holderKey() uint64 {
	r := st.Reservation
	if r == nil || r.Type.allRegistrants() {
		return 0
	}
	for _, reg := range st.Registrations {
		if reg.PRPort == r.Holder {
			return reg.Key
		}
	}
	return 0
}

// prInReadReservation answers READ RESERVATION (SPC-4 6.15.3).
func prInReadReservation(t *task) error {
	st, err := t.lu.pr.loadSynced()
	if err != nil {
		return err
	}
	b := prInHeader(st)
	if r := st.Reservation; r != nil {
		d := make([]byte, 16)
		binary.BigEndian.PutUint64(d[0:8], st.holderKey())
		d[13] = byte(r.Type) // SCOPE 0h (LU_SCOPE) in bits 7-4
		b = append(b, d...)
	}
	return prInFinish(t, b)
}

// PR type mask bits of REPORT CAPABILITIES (SPC-4 table 181).
const prTypeMask = 0x80 | 0x40 | 0x20 | 0x08 | 0x02 | 0x0001<<8 // WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX | EX_AC_AR

// prInReportCapabilities answers REPORT CAPABILITIES (SPC-4 6.15.4):
// CRH (SPC-2 RESERVE/RELEASE follow 5.13.3), SIP_C, ATP_C, PTPL_C when the
// store persists, TMV with ALLOW COMMANDS 001b, PTPL_A, and every type.
func prInReportCapabilities(t *task) error {
	st, err := t.lu.pr.loadSynced()
	if err != nil {
		return err
	}
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:2], 8)
	b[2] = 0x10 | 0x08 | 0x04 // CRH, SIP_C, ATP_C
	if t.lu.pr.ptpl {
		b[2] |= 0x01 // PTPL_C
	}
	b[3] = 0x80 | 0x01<<4 // TMV, ALLOW COMMANDS 001b
	if st.APTPL {
		b[3] |= 0x01 // PTPL_A
	}
	b[4] = byte(prTypeMask & 0xff)
	b[5] = byte(prTypeMask >> 8)
	t.dataIn(b, prInAlloc(t))
	return nil
}

// prInReadFullStatus answers READ FULL STATUS (SPC-4 6.15.5): one
// descriptor per registration, with its TransportID.
func prInReadFullStatus(t *task) error {
	st, err := t.lu.pr.loadSynced()
	if err != nil {
		return err
	}
	b := prInHeader(st)
	for i, reg := range st.Registrations {
		d := make([]byte, 24, 64)
		binary.BigEndian.PutUint64(d[0:8], reg.Key)
		if reg.AllTargetPorts {
			d[12] |= 0x02
		}
		if st.isHolder(i) {
			d[12] |= 0x01
			d[13] = byte(st.Reservation.Type)
		}
		if !reg.AllTargetPorts {
			binary.BigEndian.PutUint16(d[18:20], reg.RelativeTargetPort)
		}
		d = appendTransportID(d, &reg.PRPort)
		binary.BigEndian.PutUint32(d[20:24], uint32(len(d)-24))
		b = append(b, d...)
	}
	return prInFinish(t, b)
}

// Reservations returns the LU's persistent reservation state (a snapshot
// not to be modified), for administration and diagnostics.
func (lu *LU) Reservations() (*PRState, error) { return lu.pr.load() }
