package scsi

import (
	"encoding/binary"
)

// maxRegistrations bounds the registrations of one LU; beyond it REGISTER
// answers INSUFFICIENT REGISTRATION RESOURCES (SPC-4 5.13.7).
const maxRegistrations = 1024

// PERSISTENT RESERVE OUT service actions (SPC-4 table 172).
const (
	proRegister       = 0x00
	proReserve        = 0x01
	proRelease        = 0x02
	proClear          = 0x03
	proPreempt        = 0x04
	proPreemptAbort   = 0x05
	proRegisterIgnore = 0x06
	proRegisterMove   = 0x07
)

// prOutParams is the decoded CDB and parameter list of a PERSISTENT
// RESERVE OUT command.
type prOutParams struct {
	sa      byte
	scope   byte
	typ     PRType
	resKey  uint64 // RESERVATION KEY
	saKey   uint64 // SERVICE ACTION RESERVATION KEY
	specIPT bool
	allTgPt bool
	aptpl   bool
	tids    []PRPort // SPEC_I_PT TransportIDs, or the REGISTER AND MOVE one
	unreg   bool     // REGISTER AND MOVE: UNREG
	rtpi    uint16   // REGISTER AND MOVE: RELATIVE TARGET PORT IDENTIFIER
}

// prOutDecode checks the CDB and parameter list (SPC-4 6.16).
func (lu *LU) prOutDecode(t *task) (*prOutParams, error) {
	cdb := t.cdb
	p := &prOutParams{sa: cdb[1] & 0x1f, scope: cdb[2] >> 4, typ: PRType(cdb[2] & 0x0f)}
	plen := int(binary.BigEndian.Uint32(cdb[5:9]))
	switch p.sa {
	case proReserve, proRelease, proPreempt, proPreemptAbort, proRegisterMove:
		if p.scope != 0 { // only LU_SCOPE
			return nil, InvalidCDBField(2, 7)
		}
		if !p.typ.valid() {
			return nil, InvalidCDBField(2, 3)
		}
	case proRegister, proRegisterIgnore, proClear:
	default:
		return nil, InvalidCDBField(1, 4)
	}
	if plen < 24 || (plen != 24 && p.sa != proRegister && p.sa != proRegisterMove) {
		return nil, NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	d, err := t.dataOut(plen)
	if err != nil {
		return nil, err
	}
	p.resKey = binary.BigEndian.Uint64(d[0:8])
	p.saKey = binary.BigEndian.Uint64(d[8:16])

	if p.sa == proRegisterMove {
		p.unreg = d[17]&0x02 != 0
		p.aptpl = d[17]&0x01 != 0
		p.rtpi = binary.BigEndian.Uint16(d[18:20])
		n := int(binary.BigEndian.Uint32(d[20:24]))
		if n == 0 || n > plen-24 {
			return nil, NewSense(KeyIllegalRequest, ASCParameterListLength)
		}
		tid, _, err := parseTransportID(d[24:24+n], 24)
		if err != nil {
			return nil, err
		}
		p.tids = []PRPort{tid}
	} else {
		p.specIPT = d[20]&0x08 != 0
		p.allTgPt = d[20]&0x04 != 0
		p.aptpl = d[20]&0x01 != 0
		if p.specIPT && p.sa != proRegister {
			return nil, InvalidParamField(20, 3)
		}
		if p.sa != proRegister && p.sa != proRegisterIgnore {
			p.allTgPt = false // ignored (SPC-4 6.16.3)
		}
		switch {
		case p.specIPT:
			if plen < 28 {
				return nil, NewSense(KeyIllegalRequest, ASCParameterListLength)
			}
			n := int(binary.BigEndian.Uint32(d[24:28]))
			if n > plen-28 {
				return nil, NewSense(KeyIllegalRequest, ASCParameterListLength)
			}
			for off := 28; off < 28+n; {
				tid, l, err := parseTransportID(d[off:28+n], off)
				if err != nil {
					return nil, err
				}
				p.tids = append(p.tids, tid)
				off += l
			}
		case plen != 24:
			return nil, NewSense(KeyIllegalRequest, ASCParameterListLength)
		}
	}
	if p.aptpl && !lu.pr.ptpl {
		if p.sa == proRegisterMove {
			return nil, InvalidParamField(17, 0)
		}
		if p.sa == proRegister || p.sa == proRegisterIgnore {
			return nil, InvalidParamField(20, 0)
		}
	}
	return p, nil
}

// prEffects collects what a PR OUT transition does outside the store:
// unit attentions and tasks to abort. It is rebuilt on every run of the
// Update callback and stored in PRState.Events, so that every node of a
// cluster can deliver them to its own nexuses.
type prEffects struct {
	events []PREvent
}

func (e *prEffects) ua(asc ASC, except string, regs []PRRegistration) {
	if len(regs) == 0 {
		return
	}
	ports := make([]PRPort, len(regs))
	for i := range regs {
		ports[i] = regs[i].PRPort
	}
	e.events = append(e.events, PREvent{UnitAttention: asc, Ports: ports, Except: except})
}

func (e *prEffects) abort(except string, regs []PRRegistration) {
	if len(regs) == 0 {
		return
	}
	ports := make([]PRPort, len(regs))
	for i := range regs {
		ports[i] = regs[i].PRPort
	}
	e.events = append(e.events, PREvent{Abort: true, Ports: ports, Except: except})
}

// prOut executes PERSISTENT RESERVE OUT (SPC-4 5.13, 6.16).
func prOut(t *task) error {
	lu := t.lu
	p, err := lu.prOutDecode(t)
	if err != nil {
		return err
	}
	key, id := lu.pr.note(taskNexus(t))
	if p.sa == proRegisterMove && !lu.knownTargetPort(p.rtpi) {
		return InvalidParamField(18, -1)
	}
	var eff prEffects
	err = lu.pr.store.Update(func(st *PRState) error {
		eff = prEffects{}
		if err := lu.prTransition(st, p, key, id, &eff); err != nil {
			return err
		}
		st.Events = eff.events
		return nil
	})
	if err != nil {
		return err
	}
	lu.prDeliver(eff.events, t.entry)
	return nil
}

// prDeliver carries out the events of a committed transition on this
// LU's nexuses: unit attentions, and for PREEMPT AND ABORT the abort of
// the preempted nexuses' tasks (SPC-4 5.13.11.4.4; TAS=0, so they end
// without status). self is the PR OUT task itself (never aborted), nil
// for a transition made elsewhere.
func (lu *LU) prDeliver(events []PREvent, self *tsEntry) {
	if len(events) == 0 {
		return
	}
	known := lu.pr.knownNexuses(lu)
	victims := map[string]bool{}
	for _, ev := range events {
		for k, id := range known {
			if k == ev.Except {
				continue
			}
			for i := range ev.Ports {
				if !ev.Ports[i].covers(id) {
					continue
				}
				if ev.UnitAttention != 0 {
					lu.addUA(k, ev.UnitAttention)
				}
				if ev.Abort {
					victims[k] = true
				}
				break
			}
		}
	}
	if len(victims) > 0 {
		lu.tasks.abort(func(x *tsEntry) bool { return x != self && victims[x.key] })
	}
}

// reservationsChangedElsewhere delivers the events of a state st that
// another node committed (the store's ReservationWatcher calls it).
func (lu *LU) reservationsChangedElsewhere(st *PRState) {
	lu.prDeliver(st.Events, nil)
}

// prTransition applies the service action p from the nexus (key, id) to
// st. It only changes st and eff.
func (lu *LU) prTransition(st *PRState, p *prOutParams, key string, id prNexusID, eff *prEffects) error {
	i := st.find(id)
	switch p.sa {
	case proRegister, proRegisterIgnore:
		return lu.prRegister(st, p, key, id, i, eff)
	}
	// Every other service action needs a registered nexus and its key.
	if i < 0 || st.Registrations[i].Key != p.resKey {
		return ErrReservationConflict
	}
	me := st.Registrations[i].PRPort
	switch p.sa {
	case proReserve:
		if r := st.Reservation; r != nil {
			if st.isHolder(i) && r.Type == p.typ {
				return nil
			}
			return ErrReservationConflict
		}
		st.Reservation = &PRReservation{Holder: me, Type: p.typ}
		return nil

	case proRelease:
		r := st.Reservation
		if r == nil || !st.isHolder(i) {
			return nil
		}
		if r.Type != p.typ {
			return NewSense(KeyIllegalRequest, ASCInvalidReleaseOfPR)
		}
		st.Reservation = nil
		if r.Type.registrantsOnly() {
			eff.ua(ASCReservationsReleased, key, st.Registrations)
		}
		return nil

	case proClear:
		eff.ua(ASCReservationsPreempted, key, st.Registrations)
		st.Registrations, st.Reservation = nil, nil
		st.Generation++
		return nil

	case proPreempt, proPreemptAbort:
		return prPreempt(st, p, key, me, eff)

	case proRegisterMove:
		return lu.prRegisterMove(st, p, i, me)
	}
	return InvalidCDBField(1, 4)
}

// prRegister handles REGISTER and REGISTER AND IGNORE EXISTING KEY (SPC-4
// 5.13.7): register, change the key, or unregister (key 0).
func (lu *LU) prRegister(st *PRState, p *prOutParams, key string, id prNexusID, i int, eff *prEffects) error {
	ignore := p.sa == proRegisterIgnore
	if i < 0 {
		if !ignore && p.resKey != 0 {
			return ErrReservationConflict
		}
		if p.saKey == 0 {
			return nil // nothing to unregister
		}
		regs := []PRRegistration{{PRPort: PRPort{InitiatorName: id.name, ISID: id.isid,
			RelativeTargetPort: id.rtpi, AllTargetPorts: p.allTgPt}, Key: p.saKey}}
		for _, tid := range p.tids {
			tid.RelativeTargetPort, tid.AllTargetPorts = id.rtpi, p.allTgPt
			for k := range regs {
				if regs[k].overlaps(&tid) {
					return InvalidParamField(28, -1) // the same I_T nexus twice
				}
			}
			for k := range st.Registrations {
				if st.Registrations[k].overlaps(&tid) {
					return InvalidParamField(28, -1) // already registered
				}
			}
			regs = append(regs, PRRegistration{PRPort: tid, Key: p.saKey})
		}
		for k := range st.Registrations {
			if st.Registrations[k].overlaps(&regs[0].PRPort) {
				// ALL_TG_PT overlapping another port's registration of
				// this initiator.
				return ErrReservationConflict
			}
		}
		if len(st.Registrations)+len(regs) > maxRegistrations {
			return NewSense(KeyIllegalRequest, ASCInsufficientRegResources)
		}
		st.Registrations = append(st.Registrations, regs...)
		st.APTPL = p.aptpl
		st.Generation++
		return nil
	}
	if !ignore && st.Registrations[i].Key != p.resKey {
		return ErrReservationConflict
	}
	if p.specIPT {
		return InvalidParamField(20, 3)
	}
	if p.saKey == 0 {
		r := st.Reservation
		wasHolder := st.isHolder(i)
		me := st.Registrations[i].PRPort
		st.remove(func(x *PRRegistration) bool { return x.PRPort == me })
		// A Registrants Only reservation released by its holder
		// unregistering: the others learn it (SPC-4 5.13.11.2.2).
		if r != nil && wasHolder && st.Reservation == nil &&
			(r.Type == PRWriteExclusiveRegsOnly || r.Type == PRExclusiveAccessRegsOnly) {
			eff.ua(ASCReservationsReleased, key, st.Registrations)
		}
	} else {
		st.Registrations[i].Key = p.saKey
	}
	st.APTPL = p.aptpl
	st.Generation++
	return nil
}

// prPreempt handles PREEMPT and PREEMPT AND ABORT (SPC-4 5.13.11.4).
func prPreempt(st *PRState, p *prOutParams, key string, me PRPort, eff *prEffects) error {
	others := func(k uint64) func(*PRRegistration) bool {
		return func(x *PRRegistration) bool { return x.Key == k && x.PRPort != me }
	}
	finish := func(removed []PRRegistration) error {
		eff.ua(ASCRegistrationsPreempted, key, removed)
		if p.sa == proPreemptAbort {
			eff.abort(key, removed)
		}
		st.Generation++
		return nil
	}
	r := st.Reservation
	switch {
	case r == nil || (r.Type.allRegistrants() && p.saKey != 0):
		// Only registrations are preempted; an All Registrants
		// reservation stays while a registrant is left.
		if p.saKey == 0 {
			return InvalidParamField(8, -1)
		}
		removed := st.remove(others(p.saKey))
		if len(removed) == 0 {
			return ErrReservationConflict
		}
		return finish(removed)

	case r.Type.allRegistrants(): // and SERVICE ACTION RESERVATION KEY 0
		removed := st.remove(func(x *PRRegistration) bool { return x.PRPort != me })
		st.Reservation = &PRReservation{Holder: me, Type: p.typ}
		return finish(removed)
	}

	if p.saKey != st.holderKey() {
		if p.saKey == 0 {
			return InvalidParamField(8, -1)
		}
		removed := st.remove(others(p.saKey))
		if len(removed) == 0 {
			return ErrReservationConflict
		}
		return finish(removed)
	}
	// The key identifies the holder: take the reservation over.
	old := *r
	removed := st.remove(others(p.saKey))
	st.Reservation = &PRReservation{Holder: me, Type: p.typ}
	if old.Type != p.typ {
		// Registrants that kept their registration lost the old
		// reservation (SPC-4 5.13.11.4.3 f).
		eff.ua(ASCReservationsReleased, key, st.Registrations)
	}
	return finish(removed)
}

// prRegisterMove handles REGISTER AND MOVE (SPC-4 5.13.8): register the
// I_T nexus named by the TransportID and RELATIVE TARGET PORT IDENTIFIER
// and move the reservation to it.
func (lu *LU) prRegisterMove(st *PRState, p *prOutParams, i int, me PRPort) error {
	r := st.Reservation
	if r == nil || !st.isHolder(i) || r.Type.allRegistrants() {
		return ErrReservationConflict
	}
	if p.saKey == 0 {
		return InvalidParamField(8, -1)
	}
	dest := p.tids[0]
	dest.RelativeTargetPort = p.rtpi
	if me.overlaps(&dest) {
		return InvalidParamField(24, -1) // the source I_T nexus itself
	}
	j := -1
	for k := range st.Registrations {
		if st.Registrations[k].overlaps(&dest) {
			j = k
			break
		}
	}
	if j < 0 {
		if len(st.Registrations) >= maxRegistrations {
			return NewSense(KeyIllegalRequest, ASCInsufficientRegResources)
		}
		st.Registrations = append(st.Registrations, PRRegistration{PRPort: dest, Key: p.saKey})
	} else {
		// Not an error: the nexus gets the new key (SPC-4 5.13.8 d).
		st.Registrations[j].Key = p.saKey
		dest = st.Registrations[j].PRPort
	}
	st.Reservation = &PRReservation{Holder: dest, Type: r.Type}
	if p.unreg {
		st.remove(func(x *PRRegistration) bool { return x.PRPort == me })
	}
	st.APTPL = p.aptpl
	st.Generation++
	return nil
}

// knownNexuses returns the I_T nexuses the LU still knows, dropping from
// the PR registry those whose unit attention state the LU has forgotten
// (nexus loss), so the registry does not grow with every new session.
func (s *prState) knownNexuses(lu *LU) map[string]prNexusID {
	lu.ua.mu.Lock()
	seen := make(map[string]bool, len(lu.ua.seen))
	for k := range lu.ua.seen {
		seen[k] = true
	}
	lu.ua.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	known := make(map[string]prNexusID, len(s.nexuses))
	for k, id := range s.nexuses {
		if !seen[k] {
			delete(s.nexuses, k)
			continue
		}
		known[k] = id
	}
	return known
}
