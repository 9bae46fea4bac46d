package scsi

import "strings"

// PRType is a persistent reservation type (SPC-4 table 168).
type PRType uint8

const (
	PRWriteExclusive                PRType = 1
	PRExclusiveAccess               PRType = 3
	PRWriteExclusiveRegsOnly        PRType = 5
	PRExclusiveAccessRegsOnly       PRType = 6
	PRWriteExclusiveAllRegistrants  PRType = 7
	PRExclusiveAccessAllRegistrants PRType = 8
)

// valid reports whether t is a type the device server supports.
func (t PRType) valid() bool {
	switch t {
	case PRWriteExclusive, PRExclusiveAccess, PRWriteExclusiveRegsOnly,
		PRExclusiveAccessRegsOnly, PRWriteExclusiveAllRegistrants, PRExclusiveAccessAllRegistrants:
		return true
	}
	return false
}

// allRegistrants: every registered I_T nexus is a reservation holder.
func (t PRType) allRegistrants() bool {
	return t == PRWriteExclusiveAllRegistrants || t == PRExclusiveAccessAllRegistrants
}

// registrantsOnly: registered I_T nexuses have full access (RO or AR).
func (t PRType) registrantsOnly() bool {
	return t == PRWriteExclusiveRegsOnly || t == PRExclusiveAccessRegsOnly || t.allRegistrants()
}

// writeExclusive: non-holders may still read.
func (t PRType) writeExclusive() bool {
	return t == PRWriteExclusive || t == PRWriteExclusiveRegsOnly || t == PRWriteExclusiveAllRegistrants
}

// PRPort names the I_T nexuses a registration covers: one initiator port
// (InitiatorName and ISID) or, with an empty ISID, every initiator port of
// the iSCSI initiator device InitiatorName (TransportID format 00b); and
// one target port (RelativeTargetPort) or, with AllTargetPorts, every
// target port of the SCSI target device (ALL_TG_PT).
type PRPort struct {
	// InitiatorName is the iSCSI name, lower case (RFC 3722 normalises
	// names to lower case, so comparisons are exact).
	InitiatorName string `json:"initiator"`
	// ISID is the initiator session identifier as lower-case hex (12
	// digits), or "" for every initiator port of InitiatorName.
	ISID               string `json:"isid,omitempty"`
	RelativeTargetPort uint16 `json:"rtpi,omitempty"`
	AllTargetPorts     bool   `json:"all_tg_pt,omitempty"`
}

// PRRegistration is one registration: the I_T nexuses it covers and their
// reservation key.
type PRRegistration struct {
	PRPort
	Key uint64 `json:"key"`
}

// PRReservation is the persistent reservation of an LU. For the All
// Registrants types every registration holds it and Holder records the
// I_T nexus that created it.
type PRReservation struct {
	Holder PRPort `json:"holder"`
	Type   PRType `json:"type"`
}

// PRState is the whole persistent reservation state of one LU: what a
// ReservationStore keeps. Registrations are kept in the order they were
// made (READ KEYS and READ FULL STATUS list them in that order), so two
// stores that applied the same transitions encode identically.
type PRState struct {
	// Generation is the PRGENERATION counter (SPC-4 6.15.2): it counts
	// successful PERSISTENT RESERVE OUT commands other than RESERVE and
	// RELEASE, wrapping at 2^32.
	Generation    uint32           `json:"generation"`
	APTPL         bool             `json:"aptpl,omitempty"`
	Registrations []PRRegistration `json:"registrations,omitempty"`
	Reservation   *PRReservation   `json:"reservation,omitempty"`
	// Events are what the transition that produced this state asks every
	// node to do for its own I_T nexuses (unit attentions, task aborts);
	// each transition replaces them. They are part of the state so that a
	// replicated store carries them to the nodes that did not run the
	// command (see ReservationWatcher).
	Events []PREvent `json:"events,omitempty"`
}

// PREvent is one effect of a PR OUT transition on I_T nexuses: queue the
// unit attention UnitAttention (if not zero) and, with Abort, abort the
// tasks of every I_T nexus covered by Ports, except the nexus whose key
// is Except (the one that sent the command).
type PREvent struct {
	UnitAttention ASC      `json:"ua,omitempty"`
	Abort         bool     `json:"abort,omitempty"`
	Ports         []PRPort `json:"ports"`
	Except        string   `json:"except,omitempty"`
}

// Clone returns a deep copy of s.
func (s *PRState) Clone() *PRState {
	c := &PRState{Generation: s.Generation, APTPL: s.APTPL}
	if len(s.Registrations) > 0 {
		c.Registrations = append([]PRRegistration(nil), s.Registrations...)
	}
	if s.Reservation != nil {
		r := *s.Reservation
		c.Reservation = &r
	}
	for _, e := range s.Events {
		e.Ports = append([]PRPort(nil), e.Ports...)
		c.Events = append(c.Events, e)
	}
	return c
}

// prNexusID is the identity of one I_T nexus as the PR code compares it.
type prNexusID struct {
	name string // iSCSI initiator name, lower case
	isid string // lower-case hex, "" if the transport gave none
	rtpi uint16
}

// prIDOf extracts the initiator name, ISID and relative target port of n.
// InitiatorPort has the form name + ",i,0x" + ISID (RFC 7143 4.4.1).
func prIDOf(n *Nexus) prNexusID {
	id := prNexusID{name: strings.ToLower(n.InitiatorName), rtpi: n.RelativeTargetPort}
	port := strings.ToLower(n.InitiatorPort)
	if i := strings.LastIndex(port, ",i,0x"); i >= 0 {
		if id.name == "" {
			id.name = port[:i]
		}
		id.isid = port[i+5:]
	} else if id.name == "" {
		id.name = port
	}
	return id
}

// covers reports whether the registration port p includes nexus id.
func (p *PRPort) covers(id prNexusID) bool {
	if p.InitiatorName != id.name {
		return false
	}
	if p.ISID != "" && p.ISID != id.isid {
		return false
	}
	return p.AllTargetPorts || p.RelativeTargetPort == id.rtpi
}

// overlaps reports whether two registration ports share an I_T nexus.
func (p *PRPort) overlaps(q *PRPort) bool {
	if p.InitiatorName != q.InitiatorName {
		return false
	}
	if p.ISID != "" && q.ISID != "" && p.ISID != q.ISID {
		return false
	}
	return p.AllTargetPorts || q.AllTargetPorts || p.RelativeTargetPort == q.RelativeTargetPort
}

// find returns the index of the registration covering id, or -1.
func (s *PRState) find(id prNexusID) int {
	for i := range s.Registrations {
		if s.Registrations[i].covers(id) {
			return i
		}
	}
	return -1
}

// isHolder reports whether the registration at index i holds the
// reservation.
func (s *PRState) isHolder(i int) bool {
	r := s.Reservation
	if r == nil || i < 0 {
		return false
	}
	return r.Type.allRegistrants() || s.Registrations[i].PRPort == r.Holder
}

// remove deletes the registrations for which drop returns true and
// returns them. When the reservation holder loses its registration the
// reservation goes too, except for the All Registrants types while any
// registration remains (SPC-4 5.13.11.2.2).
func (s *PRState) remove(drop func(*PRRegistration) bool) (removed []PRRegistration) {
	kept := s.Registrations[:0]
	holderGone := false
	for _, r := range s.Registrations {
		if drop(&r) {
			removed = append(removed, r)
			if s.Reservation != nil && r.PRPort == s.Reservation.Holder {
				holderGone = true
			}
			continue
		}
		kept = append(kept, r)
	}
	s.Registrations = kept
	if len(kept) == 0 {
		s.Registrations = nil
	}
	if r := s.Reservation; r != nil {
		if r.Type.allRegistrants() {
			if len(s.Registrations) == 0 {
				s.Reservation = nil
			} else if holderGone {
				r.Holder = s.Registrations[0].PRPort
			}
		} else if holderGone {
			s.Reservation = nil
		}
	}
	return removed
}
