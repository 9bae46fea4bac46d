package scsi

// SPC-2 RESERVE and RELEASE (SPC-2 7.21, 7.17; third-party reservations
// and extents are not supported). The reservation belongs to one I_T
// nexus; the reservation gate refuses other nexuses' commands except those
// allowed (INQUIRY, REPORT LUNS, REQUEST SENSE, RELEASE and the opcodes
// flagged opAllowedRR). While persistent reservation registrations exist,
// RESERVE and RELEASE conflict (SPC-2 5.5.1), except that they complete
// with GOOD and no effect from the persistent reservation holder or, under
// a Registrants Only or All Registrants reservation, from a registrant
// (SPC-4 5.13.3, compatible reservation handling: CRH=1).

// spc2UnderPR applies SPC-4 5.13.3 and SPC-2 5.5.1 to a RESERVE or
// RELEASE from nexus id: done=true means the command ends with err (nil:
// GOOD without effect); done=false means plain SPC-2 processing.
func (lu *LU) spc2UnderPR(id prNexusID) (done bool, err error) {
	st, err := lu.pr.load()
	if err != nil {
		return true, err
	}
	if len(st.Registrations) == 0 {
		return false, nil
	}
	if r := st.Reservation; r != nil {
		if i := st.find(id); i >= 0 && (st.isHolder(i) || r.Type.registrantsOnly()) {
			return true, nil
		}
	}
	return true, ErrReservationConflict
}

// reserveSPC2 executes RESERVE(6) and RESERVE(10).
func reserveSPC2(t *task) error {
	if err := spc2CheckCDB(t); err != nil {
		return err
	}
	lu := t.lu
	k, id := lu.pr.note(taskNexus(t))
	if done, err := lu.spc2UnderPR(id); done {
		return err
	}
	if h := lu.spc2HolderOf(); h != "" && h != k {
		return ErrReservationConflict
	}
	lu.pr.mu.Lock()
	defer lu.pr.mu.Unlock()
	if lu.pr.spc2Holder != "" && lu.pr.spc2Holder != k {
		return ErrReservationConflict
	}
	lu.pr.spc2Holder = k
	return nil
}

// releaseSPC2 executes RELEASE(6) and RELEASE(10): it releases the
// reservation if this nexus holds it, and does nothing otherwise (a
// persistent reservation is never released by it).
func releaseSPC2(t *task) error {
	if err := spc2CheckCDB(t); err != nil {
		return err
	}
	lu := t.lu
	k, id := lu.pr.note(taskNexus(t))
	if done, err := lu.spc2UnderPR(id); done {
		return err
	}
	lu.pr.mu.Lock()
	defer lu.pr.mu.Unlock()
	if lu.pr.spc2Holder == k {
		lu.pr.spc2Holder = ""
	}
	return nil
}

// spc2CheckCDB refuses third-party reservations (3RDPTY, RESERVE(10)/
// RELEASE(10) byte 1 bit 4; LONGID bit 1) and extents (RESERVE(6)/
// RELEASE(6) byte 1 bit 0).
func spc2CheckCDB(t *task) error {
	c := t.cdb
	if len(c) < 6 {
		return InvalidCDBField(0, -1)
	}
	switch c[0] {
	case opcReserve10, opcRelease10:
		if c[1]&0x10 != 0 {
			return InvalidCDBField(1, 4)
		}
		if c[1]&0x02 != 0 {
			return InvalidCDBField(1, 1)
		}
	default:
		if c[1]&0x01 != 0 {
			return InvalidCDBField(1, 0)
		}
	}
	return nil
}

// resetReservations releases the SPC-2 reservation, as a LOGICAL UNIT
// RESET, a target reset or a power on does (SPC-2 5.5.1). Persistent
// reservations are not affected.
func (lu *LU) resetReservations() {
	lu.pr.mu.Lock()
	lu.pr.spc2Holder = ""
	lu.pr.mu.Unlock()
}

// nexusLost releases the SPC-2 reservation held by the I_T nexus with key
// k, on I_T nexus loss or logout (SPC-2 5.5.1), and forgets the nexus.
// Persistent reservations and registrations are kept.
func (lu *LU) nexusLost(k string) {
	lu.pr.mu.Lock()
	defer lu.pr.mu.Unlock()
	if lu.pr.spc2Holder == k {
		lu.pr.spc2Holder = ""
	}
	delete(lu.pr.nexuses, k)
}

// spc2HolderOf returns the key of the nexus holding the SPC-2 reservation,
// or "". A holder the LU no longer knows (its unit attention state was
// dropped by forgetNexus on I_T nexus loss or logout) has lost the
// reservation (SPC-2 5.5.1), so it is released here too, should the
// nexus-loss path not have called nexusLost.
func (lu *LU) spc2HolderOf() string {
	lu.pr.mu.RLock()
	h := lu.pr.spc2Holder
	lu.pr.mu.RUnlock()
	if h == "" {
		return ""
	}
	lu.pr.mu.Lock()
	defer lu.pr.mu.Unlock()
	h = lu.pr.spc2Holder
	if h == "" {
		return ""
	}
	lu.ua.mu.Lock()
	known := lu.ua.seen[h]
	lu.ua.mu.Unlock()
	if !known {
		lu.pr.spc2Holder = ""
		delete(lu.pr.nexuses, h)
		return ""
	}
	return h
}
