package scsi

import (
	"encoding/binary"
	"sync"
	"testing"
)

// aluaTestGroups is a PortGroupState a test can change.
type aluaTestGroups struct {
	mu     sync.Mutex
	groups []TargetPortGroup
	itt    uint8
}

func (g *aluaTestGroups) AccessState(id uint16) AccessState {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, x := range g.groups {
		if x.ID == id {
			return x.State
		}
	}
	return ALUAUnavailable
}

func (g *aluaTestGroups) PortGroups(*Nexus) []TargetPortGroup {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]TargetPortGroup(nil), g.groups...)
}

func (g *aluaTestGroups) ImplicitTransitionTime() uint8 { return g.itt }

func (g *aluaTestGroups) set(id uint16, s AccessState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := range g.groups {
		if g.groups[i].ID == id {
			g.groups[i].State = s
		}
	}
}

func aluaTwoGroups() *aluaTestGroups {
	return &aluaTestGroups{itt: 30, groups: []TargetPortGroup{
		{ID: 1, State: ALUAActiveOptimized, Preferred: true, Supported: SupportsClusterStates, RelativePorts: []uint16{1, 3}},
		{ID: 2, State: ALUAStandby, Supported: SupportsClusterStates, StatusCode: TPGStatusChangedImplicit, RelativePorts: []uint16{2}},
	}}
}

func aluaRTPG(d *Device, n *Nexus, format byte, alloc uint32) *Response {
	c := make([]byte, 12)
	c[0], c[1] = opcMaintenanceIn, format<<5|saReportTPG
	binary.BigEndian.PutUint32(c[6:10], alloc)
	return run(d, n, c, nil, alloc)
}

func TestReportTargetPortGroupsLayout(t *testing.T) {
	a := testNexus(0)
	d, _ := prSetup(t, LUConfig{PortGroups: aluaTwoGroups()}, a)
	r := aluaRTPG(d, a, 0, 1024)
	prGood(t, r)
	want := []byte{
		0, 0, 0, 28,
		0x80, 0x8f, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3,
		0x02, 0x8f, 0, 2, 0, 2, 0, 1, 0, 0, 0, 2,
	}
	if string(r.Data) != string(want) {
		t.Fatalf("RTPG\n got %x\nwant %x", r.Data, want)
	}
	// Extended header: FORMAT TYPE 001b and the implicit transition time.
	r = aluaRTPG(d, a, 1, 1024)
	prGood(t, r)
	if len(r.Data) != len(want)+4 || binary.BigEndian.Uint32(r.Data) != uint32(len(r.Data)-4) ||
		r.Data[4] != 0x10 || r.Data[5] != 30 || string(r.Data[8:]) != string(want[4:]) {
		t.Fatalf("RTPG extended: %x", r.Data)
	}
	// Allocation length truncates; the length field keeps the full size.
	r = aluaRTPG(d, a, 0, 4)
	prGood(t, r)
	if len(r.Data) != 4 || binary.BigEndian.Uint32(r.Data) != 28 {
		t.Fatalf("RTPG alloc 4: %x", r.Data)
	}
	prSense(t, aluaRTPG(d, a, 2, 1024), KeyIllegalRequest, ASCInvalidFieldInCDB)
}

func TestReportTargetPortGroupsDefault(t *testing.T) {
	a := testNexus(0)
	a.TargetPortGroup, a.RelativeTargetPort = 7, 9
	d, lu := prSetup(t, LUConfig{}, a)
	if lu.tpgs() != 1 {
		t.Fatalf("TPGS %d, want 01b implicit", lu.tpgs())
	}
	r := aluaRTPG(d, a, 0, 1024)
	prGood(t, r)
	want := []byte{0, 0, 0, 12, 0x80, 0x01, 0, 7, 0, 0, 0, 1, 0, 0, 0, 9}
	if string(r.Data) != string(want) {
		t.Fatalf("default RTPG %x, want %x", r.Data, want)
	}
}

func TestALUAGate(t *testing.T) {
	g := aluaTwoGroups()
	onA, onB := testNexus(0), testNexus(1)
	onB.TargetPortGroup, onB.RelativeTargetPort = 2, 2
	onB.TargetPort = "iqn.2026-11.test:tgt,t,0x0002"
	d, lu := prSetup(t, LUConfig{PortGroups: g}, onA)
	clearUA(d, onB)
	inquiry := []byte{0x12, 0, 0, 0, 36, 0}
	reportLUNs := []byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}

	cases := []struct {
		state AccessState
		asc   ASC
		// allowed: INQUIRY, REPORT LUNS, RTPG, MODE SENSE, PR IN
		modeSense, prIn bool
	}{
		{ALUAStandby, ASCLUNotAccessibleStandby, true, true},
		{ALUAUnavailable, ASCLUNotAccessibleUnavail, false, false},
		{ALUATransitioning, ASCLUNotReadyTransition, false, false},
	}
	for _, c := range cases {
		g.set(2, c.state)
		prSense(t, prTUR(d, onB), KeyNotReady, c.asc)
		prSense(t, prRead10(d, onB), KeyNotReady, c.asc)
		prSense(t, prWrite10(d, onB), KeyNotReady, c.asc)
		prGood(t, run(d, onB, inquiry, nil, 36))
		prGood(t, run(d, onB, reportLUNs, nil, 256))
		prGood(t, aluaRTPG(d, onB, 0, 256))
		if c.modeSense {
			prGood(t, prModeSense6(d, onB))
		} else {
			prSense(t, prModeSense6(d, onB), KeyNotReady, c.asc)
		}
		if c.prIn {
			prGood(t, prInCmd(d, onB, prinReadKeys, 64))
		} else {
			prSense(t, prInCmd(d, onB, prinReadKeys, 64), KeyNotReady, c.asc)
		}
		// READ CAPACITY in Standby (Linux sizes every path when it
		// attaches it), but no other SERVICE ACTION IN(16).
		rc10 := []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		rc16 := []byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}
		lbaStatus := []byte{0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0}
		if c.state == ALUAStandby {
			prGood(t, run(d, onB, rc10, nil, 8))
			prGood(t, run(d, onB, rc16, nil, 32))
		} else {
			prSense(t, run(d, onB, rc10, nil, 8), KeyNotReady, c.asc)
			prSense(t, run(d, onB, rc16, nil, 32), KeyNotReady, c.asc)
		}
		prSense(t, run(d, onB, lbaStatus, nil, 24), KeyNotReady, c.asc)
		// The other group is unaffected.
		prGood(t, prRead10(d, onA))
	}
	g.set(2, ALUAActiveNonOptimized)
	prGood(t, prTUR(d, onB))
	prGood(t, prRead10(d, onB))
	prGood(t, prWrite10(d, onB))

	// A state change is reported to every nexus.
	lu.PortGroupsChanged()
	prSense(t, prTUR(d, onA), KeyUnitAttention, ASCAsymAccessStateChanged)
	prSense(t, prTUR(d, onB), KeyUnitAttention, ASCAsymAccessStateChanged)
	prGood(t, prTUR(d, onA))
}

func TestSetTargetPortGroupsNotSupported(t *testing.T) {
	a := testNexus(0)
	d, _ := prSetup(t, LUConfig{}, a)
	c := make([]byte, 12)
	c[0], c[1] = opcMaintenanceOut, 0x0a
	r := run(d, a, c, nil, 0)
	if r.Status != StatusCheckCondition || r.Sense[2]&0xf != byte(KeyIllegalRequest) {
		t.Fatalf("SET TARGET PORT GROUPS: %v %x", r.Status, r.Sense)
	}
}

func TestStaticPortGroups(t *testing.T) {
	ports := []uint16{1, 2}
	g := NewStaticPortGroups(10,
		TargetPortGroup{ID: 1, State: ALUAActiveOptimized, Preferred: true, Supported: SupportsClusterStates, RelativePorts: ports},
		TargetPortGroup{ID: 2, State: ALUAStandby, Supported: SupportsClusterStates, RelativePorts: []uint16{3}})
	ports[0] = 99 // the caller's slice is not kept
	a := testNexus(0)
	unknown := testNexus(1)
	unknown.TargetPortGroup = 5
	d, lu := prSetup(t, LUConfig{PortGroups: g}, a, unknown)
	prGood(t, prRead10(d, a))
	prSense(t, prRead10(d, unknown), KeyNotReady, ASCLUNotAccessibleUnavail)

	if !g.SetState(1, ALUATransitioning) || g.SetState(7, ALUAStandby) {
		t.Fatal("SetState on known/unknown group")
	}
	lu.PortGroupsChanged()
	prSense(t, prTUR(d, a), KeyUnitAttention, ASCAsymAccessStateChanged)
	prSense(t, prRead10(d, a), KeyNotReady, ASCLUNotReadyTransition)
	r := aluaRTPG(d, a, 1, 1024)
	prGood(t, r)
	// Extended header, then group 1: transitioning, preferred, status 02h.
	if r.Data[5] != 10 || r.Data[8] != 0x8f || r.Data[13] != TPGStatusChangedImplicit ||
		r.Data[15] != 2 || r.Data[19] != 1 {
		t.Fatalf("RTPG after transition: %x", r.Data)
	}
	groups := g.PortGroups(nil)
	groups[0].RelativePorts[0] = 42
	if g.PortGroups(nil)[0].RelativePorts[0] != 1 {
		t.Fatal("PortGroups returned shared slices")
	}
}
