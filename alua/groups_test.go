package alua

import (
	"testing"

	"github.com/hatgt/hatgt/scsi"
)

func states(gs []scsi.TargetPortGroup) map[uint16]scsi.AccessState {
	m := map[uint16]scsi.AccessState{}
	for _, g := range gs {
		if len(g.RelativePorts) != 1 || g.RelativePorts[0] != g.ID {
			return nil
		}
		m[g.ID] = g.State
	}
	return m
}

func TestCompute(t *testing.T) {
	owner3 := func(self uint16, down bool) []Copy {
		return []Copy{{Tag: 3, Owner: true, Down: down, Self: self == 3}, {Tag: 1, Self: self == 1}, {Tag: 0}}
	}
	for _, tc := range []struct {
		name    string
		copies  []Copy
		serving bool
		want    map[uint16]scsi.AccessState
	}{
		{"standby node", owner3(1, false), false, map[uint16]scsi.AccessState{1: scsi.ALUAStandby, 3: scsi.ALUAActiveOptimized}},
		{"serving owner", owner3(3, false), true, map[uint16]scsi.AccessState{1: scsi.ALUAStandby, 3: scsi.ALUAActiveOptimized}},
		{"owner opening", owner3(3, false), false, map[uint16]scsi.AccessState{1: scsi.ALUAStandby, 3: scsi.ALUATransitioning}},
		{"owner down", owner3(1, true), false, map[uint16]scsi.AccessState{1: scsi.ALUAStandby, 3: scsi.ALUATransitioning}},
	} {
		got := Compute(tc.copies, tc.serving)
		if s := states(got); len(s) != len(tc.want) || s[1] != tc.want[1] || s[3] != tc.want[3] {
			t.Errorf("%s: %+v, want %v", tc.name, got, tc.want)
		}
		if len(got) == 2 && (got[0].ID != 1 || !got[1].Preferred) {
			t.Errorf("%s: not sorted, or the owner not preferred: %+v", tc.name, got)
		}
	}
}

func TestGroupsSet(t *testing.T) {
	var g Groups
	a := Compute([]Copy{{Tag: 1, Owner: true, Self: true}, {Tag: 2}}, true)
	if !g.Set(a) || g.Set(Compute([]Copy{{Tag: 1, Owner: true, Self: true}, {Tag: 2}}, true)) {
		t.Fatal("Set must report the first change and not a repeat")
	}
	if g.AccessState(1) != scsi.ALUAActiveOptimized || g.AccessState(2) != scsi.ALUAStandby || g.AccessState(9) != scsi.ALUAUnavailable {
		t.Fatalf("states 1 %v, 2 %v, 9 %v", g.AccessState(1), g.AccessState(2), g.AccessState(9))
	}
	if !g.Set(Compute([]Copy{{Tag: 1, Self: true}, {Tag: 2, Owner: true}}, false)) {
		t.Fatal("an owner change is a change")
	}
	pg := g.PortGroups(nil)
	if pg[0].StatusCode != scsi.TPGStatusChangedImplicit || pg[1].State != scsi.ALUAActiveOptimized {
		t.Fatalf("after the move: %+v", pg)
	}
	pg[0].RelativePorts[0] = 99
	if g.PortGroups(nil)[0].RelativePorts[0] != 1 {
		t.Fatal("PortGroups shares its slices with the caller")
	}
}
