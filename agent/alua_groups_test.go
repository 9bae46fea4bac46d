package agent

import (
	"testing"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/scsi"
)

func TestPortGroupsFor(t *testing.T) {
	st := cluster.NewState()
	for i, id := range []string{"n1", "n2", "n3"} {
		st.Nodes[id] = &cluster.NodeInfo{ID: id, Health: cluster.HealthAlive, Tag: uint16(i + 1)}
	}
	l := cluster.DesiredLUN{LUN: cluster.LUN{Replicas: 2, Placement: []string{"n3", "n1"}, Owner: "n3"}}
	want := func(got []scsi.TargetPortGroup, states map[uint16]scsi.AccessState) {
		t.Helper()
		if len(got) != len(states) {
			t.Fatalf("groups %+v, want %v", got, states)
		}
		for _, g := range got {
			if s, ok := states[g.ID]; !ok || s != g.State || len(g.RelativePorts) != 1 || g.RelativePorts[0] != g.ID {
				t.Fatalf("group %+v, want states %v (relative port = tag)", g, states)
			}
		}
	}
	// Tags: n1 -> 1, n3 -> 3; n2 holds no copy.
	want(portGroupsFor(st, l, "n1", false), map[uint16]scsi.AccessState{1: scsi.ALUAStandby, 3: scsi.ALUAActiveOptimized})
	want(portGroupsFor(st, l, "n3", true), map[uint16]scsi.AccessState{1: scsi.ALUAStandby, 3: scsi.ALUAActiveOptimized})
	// The owner itself before its volume serves: transitioning.
	want(portGroupsFor(st, l, "n3", false), map[uint16]scsi.AccessState{1: scsi.ALUAStandby, 3: scsi.ALUATransitioning})
	// The owner recorded dead: a failover is pending.
	st.Nodes["n3"].Health = cluster.HealthDead
	want(portGroupsFor(st, l, "n1", false), map[uint16]scsi.AccessState{1: scsi.ALUAStandby, 3: scsi.ALUATransitioning})

}
