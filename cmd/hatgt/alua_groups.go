package main

import (
	"slices"
	"sync"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/scsi"
)

// clusterPortGroups is the PortGroupState of a replicated LUN on one node:
// one target port group per node holding a copy (its ID and its one
// relative port are the node's portal group tag, the same on every node),
// the owner's Active/Optimized, the others Standby. A group this node does
// not know is Unavailable.
type clusterPortGroups struct {
	mu     sync.RWMutex
	groups []scsi.TargetPortGroup
}

func (g *clusterPortGroups) AccessState(id uint16) scsi.AccessState {
	g.mu.RLock()
	defer g.mu.RUnlock()
	for _, tg := range g.groups {
		if tg.ID == id {
			return tg.State
		}
	}
	return scsi.ALUAUnavailable
}

func (g *clusterPortGroups) PortGroups(*scsi.Nexus) []scsi.TargetPortGroup {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]scsi.TargetPortGroup, len(g.groups))
	for i, tg := range g.groups {
		tg.RelativePorts = slices.Clone(tg.RelativePorts)
		out[i] = tg
	}
	return out
}

// ImplicitTransitionTime: an owner change takes about the failover delay
// plus the time to open the volume.
func (g *clusterPortGroups) ImplicitTransitionTime() uint8 { return 10 }

// set replaces the groups and reports whether any state or member changed
// (then the caller raises ASYMMETRIC ACCESS STATE CHANGED).
func (g *clusterPortGroups) set(groups []scsi.TargetPortGroup) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	same := len(groups) == len(g.groups)
	for i := 0; same && i < len(groups); i++ {
		same = groups[i].ID == g.groups[i].ID && groups[i].State == g.groups[i].State
	}
	if same {
		return false
	}
	for i := range groups {
		groups[i].StatusCode = scsi.TPGStatusChangedImplicit
	}
	g.groups = groups
	return true
}

// portGroupsFor computes the groups of replicated LUN l as node self sees
// them: the owner's group Active/Optimized (Transitioning while this node,
// the owner, has no serving volume yet, or while the owner is recorded
// down and a failover is pending), every other copy's group Standby.
func portGroupsFor(st *cluster.State, l cluster.DesiredLUN, self string, serving bool) []scsi.TargetPortGroup {
	var out []scsi.TargetPortGroup
	for _, id := range l.Placement {
		tag := portalGroupTag(st, id)
		if tag == 0 {
			continue
		}
		g := scsi.TargetPortGroup{ID: tag, State: scsi.ALUAStandby, Supported: scsi.SupportsClusterStates,
			RelativePorts: []uint16{tag}}
		if id == l.Owner {
			g.Preferred = true
			g.State = scsi.ALUAActiveOptimized
			switch {
			case id == self && !serving:
				g.State = scsi.ALUATransitioning
			case id != self && st.Nodes[id] != nil && st.Nodes[id].Health != cluster.HealthAlive:
				g.State = scsi.ALUATransitioning
			}
		}
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b scsi.TargetPortGroup) int { return int(a.ID) - int(b.ID) })
	return out
}
