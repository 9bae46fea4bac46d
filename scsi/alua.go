package scsi

import (
	"encoding/binary"
	"fmt"
)

// AccessState is an asymmetric access state (SPC-4 table 180).
type AccessState uint8

const (
	ALUAActiveOptimized    AccessState = 0x0
	ALUAActiveNonOptimized AccessState = 0x1
	ALUAStandby            AccessState = 0x2
	ALUAUnavailable        AccessState = 0x3
	ALUAOffline            AccessState = 0xe
	ALUATransitioning      AccessState = 0xf
)

func (s AccessState) String() string {
	switch s {
	case ALUAActiveOptimized:
		return "active/optimized"
	case ALUAActiveNonOptimized:
		return "active/non-optimized"
	case ALUAStandby:
		return "standby"
	case ALUAUnavailable:
		return "unavailable"
	case ALUAOffline:
		return "offline"
	case ALUATransitioning:
		return "transitioning"
	}
	return fmt.Sprintf("access state 0x%x", uint8(s))
}

// SupportedStates is the set of access states a target port group may
// enter, as the T_SUP .. AO_SUP bits of REPORT TARGET PORT GROUPS (byte 1
// of a descriptor).
type SupportedStates uint8

const (
	SupportsTransitioning   SupportedStates = 0x80 // T_SUP
	SupportsOffline         SupportedStates = 0x40 // O_SUP
	SupportsUnavailable     SupportedStates = 0x08 // U_SUP
	SupportsStandby         SupportedStates = 0x04 // S_SUP
	SupportsNonOptimized    SupportedStates = 0x02 // AN_SUP
	SupportsActiveOptimized SupportedStates = 0x01 // AO_SUP

	// SupportsClusterStates is what a hatgt node group can be in.
	SupportsClusterStates = SupportsTransitioning | SupportsUnavailable | SupportsStandby |
		SupportsNonOptimized | SupportsActiveOptimized
)

// TPG status codes (SPC-4 table 181).
const (
	TPGStatusNone            = 0x00
	TPGStatusChangedExplicit = 0x01 // altered by SET TARGET PORT GROUPS
	TPGStatusChangedImplicit = 0x02 // altered by implicit ALUA behavior
)

// TargetPortGroup is one target port group of an LU.
type TargetPortGroup struct {
	ID        uint16
	State     AccessState
	Preferred bool // PREF: the preferred group for the LU
	Supported SupportedStates
	// StatusCode is TPGStatus*: why the state last changed.
	StatusCode uint8
	// RelativePorts are the relative target port identifiers of the
	// group's ports.
	RelativePorts []uint16
}

// DefaultPortGroups is the PortGroupState of an LU served by one node
// alone: every port is in one Active/Optimized group. REPORT TARGET PORT
// GROUPS names the group and port the nexus arrived on (group 1, port 1
// when the transport gave none).
type DefaultPortGroups struct{}

// AccessState is Active/Optimized for every group.
func (DefaultPortGroups) AccessState(uint16) AccessState { return ALUAActiveOptimized }

// PortGroups returns the one group of the nexus.
func (DefaultPortGroups) PortGroups(n *Nexus) []TargetPortGroup {
	g, p := uint16(1), uint16(1)
	if n != nil && n.TargetPortGroup != 0 {
		g = n.TargetPortGroup
	}
	if n != nil && n.RelativeTargetPort != 0 {
		p = n.RelativeTargetPort
	}
	return []TargetPortGroup{{ID: g, State: ALUAActiveOptimized, Preferred: true,
		Supported: SupportsActiveOptimized, RelativePorts: []uint16{p}}}
}

const (
	opcMaintenanceIn         = 0xa3
	opcMaintenanceOut        = 0xa4
	saReportTPG              = 0x0a
	ascLUNotReadyOffline ASC = 0x0412 // LOGICAL UNIT NOT READY, OFFLINE
)

func portGroupCommands() []opInfo {
	return []opInfo{{
		name: "REPORT TARGET PORT GROUPS", opcode: opcMaintenanceIn, sa: saReportTPG, hasSA: true, cdbLen: 12,
		usage: []byte{opcMaintenanceIn, 0xe0 | saReportTPG, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0},
		flags: opAllowedUnderPR | opAllowedRR | opAllowedStandby | opNoMedium,
		fn:    reportTargetPortGroups,
	}}
	// SET TARGET PORT GROUPS is not in the table: with implicit ALUA only
	// (TPGS 01b) it is an unsupported command (SPC-4 6.39).
}

// aluaState is the per-LU ALUA state: where the access states come from.
type aluaState struct {
	groups PortGroupState
}

func (s *aluaState) init(lu *LU) error {
	s.groups = lu.cfg.PortGroups
	if s.groups == nil {
		s.groups = DefaultPortGroups{}
	}
	return nil
}

// aluaAllowed lists, per access state, the commands SPC-4 5.15.2.4
// allows in it (keyed by opcode; MAINTENANCE IN/OUT and the buffer
// commands are refined by aluaAllowedCDB). This table, not the opcode
// flags, decides, so that TEST UNIT READY answers NOT READY on a standby
// path as path checkers expect.
var aluaAllowed = map[AccessState]map[byte]bool{
	ALUAStandby: {
		0x12:              true, // INQUIRY
		0x4c:              true, // LOG SELECT
		0x4d:              true, // LOG SENSE
		0x15:              true, // MODE SELECT(6)
		0x55:              true, // MODE SELECT(10)
		0x1a:              true, // MODE SENSE(6)
		0x5a:              true, // MODE SENSE(10)
		0xa0:              true, // REPORT LUNS
		0x1c:              true, // RECEIVE DIAGNOSTIC RESULTS
		0x1d:              true, // SEND DIAGNOSTIC
		0x03:              true, // REQUEST SENSE
		0x3b:              true, // WRITE BUFFER
		0x3c:              true, // READ BUFFER
		opcPRIn:           true,
		opcPROut:          true,
		opcMaintenanceIn:  true,
		opcMaintenanceOut: true,
		// Beyond SPC-4's list, as LIO does: Linux reads the capacity of
		// every path once, when it attaches it; a standby path refused
		// it would stay at size 0 after it becomes active.
		0x25: true, // READ CAPACITY(10)
		0x9e: true, // SERVICE ACTION IN(16): READ CAPACITY(16) only
	},
	ALUAUnavailable: {
		0x12:              true, // INQUIRY
		0xa0:              true, // REPORT LUNS
		0x03:              true, // REQUEST SENSE
		opcMaintenanceIn:  true,
		opcMaintenanceOut: true,
	},
	ALUATransitioning: {
		0x12:             true, // INQUIRY
		0xa0:             true, // REPORT LUNS
		0x03:             true, // REQUEST SENSE
		opcMaintenanceIn: true,
	},
}

// aluaAllowedCDB refines aluaAllowed: only SET TARGET PORT GROUPS of the
// MAINTENANCE OUT service actions, only READ CAPACITY(16) of SERVICE ACTION
// IN(16), and only the echo buffer (mode 0Ah) of READ/WRITE BUFFER in the
// Unavailable state.
func aluaAllowedCDB(s AccessState, cdb []byte) bool {
	switch cdb[0] {
	case opcMaintenanceOut:
		return cdb[1]&0x1f == 0x0a
	case 0x3b, 0x3c:
		return s == ALUAStandby || cdb[1]&0x1f == 0x0a
	case 0x9e:
		return len(cdb) > 1 && cdb[1]&0x1f == 0x10
	}
	return true
}

// aluaGate refuses t when the access state of the nexus's target port
// group does not allow it (SPC-4 5.15.2.4): Standby/Unavailable answer NOT
// READY with the state's ASC; Transitioning answers NOT READY, ASYMMETRIC
// ACCESS STATE TRANSITION. Active/Optimized and Active/Non-optimized
// serve every command.
func (lu *LU) aluaGate(t *task) error {
	if len(t.cdb) == 0 {
		return nil
	}
	st := lu.alua.groups.AccessState(taskNexus(t).TargetPortGroup)
	var asc ASC
	switch st {
	case ALUAActiveOptimized, ALUAActiveNonOptimized:
		return nil
	case ALUAStandby:
		asc = ASCLUNotAccessibleStandby
	case ALUAUnavailable:
		asc = ASCLUNotAccessibleUnavail
	case ALUATransitioning:
		asc = ASCLUNotReadyTransition
	default: // Offline, or a state we do not know: nothing but the basics
		st, asc = ALUATransitioning, ascLUNotReadyOffline
	}
	if aluaAllowed[st][t.cdb[0]] && aluaAllowedCDB(st, t.cdb) {
		return nil
	}
	return NewSense(KeyNotReady, asc)
}

// tpgs returns the INQUIRY TPGS field (bits 5-4 of byte 5): 01b implicit
// ALUA.
func (lu *LU) tpgs() byte { return 1 }

// PortGroupsChanged tells every I_T nexus of the LU that the access state
// of a target port group changed (unit attention ASYMMETRIC ACCESS STATE
// CHANGED, SPC-4 5.15.2.3). The owner of the PortGroupState calls it.
func (lu *LU) PortGroupsChanged() {
	lu.addUAAll("", ASCAsymAccessStateChanged)
}

// knownTargetPort reports whether rtpi is a relative target port of the
// LU (listed by its port groups, or seen on a nexus), for REGISTER AND
// MOVE.
func (lu *LU) knownTargetPort(rtpi uint16) bool {
	lu.pr.mu.Lock()
	for _, id := range lu.pr.nexuses {
		if id.rtpi == rtpi {
			lu.pr.mu.Unlock()
			return true
		}
	}
	lu.pr.mu.Unlock()
	for _, g := range lu.alua.groups.PortGroups(nil) {
		for _, p := range g.RelativePorts {
			if p == rtpi {
				return true
			}
		}
	}
	return false
}

// reportTargetPortGroups answers REPORT TARGET PORT GROUPS (SPC-4 6.36):
// with PARAMETER DATA FORMAT 000b a 4-byte RETURN DATA LENGTH header, with
// 001b the extended header that adds the IMPLICIT TRANSITION TIME; then
// one descriptor per group with its relative target ports.
func reportTargetPortGroups(t *task) error {
	cdb := t.cdb
	format := cdb[1] >> 5
	if format > 1 {
		return InvalidCDBField(1, 7)
	}
	alloc := int(binary.BigEndian.Uint32(cdb[6:10]))
	groups := t.lu.alua.groups.PortGroups(taskNexus(t))
	b := make([]byte, 4, 64)
	if format == 1 {
		var itt uint8
		if tt, ok := t.lu.alua.groups.(ImplicitTransitionTimer); ok {
			itt = tt.ImplicitTransitionTime()
		}
		b = append(b, 0x10, itt, 0, 0) // FORMAT TYPE 001b
	}
	for _, g := range groups {
		ports := g.RelativePorts
		if len(ports) > 255 {
			ports = ports[:255] // TARGET PORT COUNT is one byte
		}
		d0 := byte(g.State) & 0x0f
		if g.Preferred {
			d0 |= 0x80
		}
		b = append(b, d0, byte(g.Supported), byte(g.ID>>8), byte(g.ID), 0, g.StatusCode, 0, byte(len(ports)))
		for _, p := range ports {
			b = append(b, 0, 0, byte(p>>8), byte(p))
		}
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(len(b)-4))
	t.dataIn(b, alloc)
	return nil
}
