package alua

import (
	"slices"
	"sync"

	"github.com/hatgt/hatgt/scsi"
)

// Copy is one node holding a copy of the LUN, as the caller's cluster
// state says.
type Copy struct {
	// Tag is the node's target port group (its portal group tag); 0 means
	// unknown, and the copy is left out.
	Tag uint16
	// Owner marks the node that serves the LUN.
	Owner bool
	// Down marks a node recorded dead: an owner that is down is
	// Transitioning (failover pending).
	Down bool
	// Self marks this node.
	Self bool
}

// Compute returns the port groups of a LUN with copies, sorted by ID, as
// the node marked Self reports them; serving says whether that node's own
// volume serves IO (it matters only when it is the owner).
func Compute(copies []Copy, serving bool) []scsi.TargetPortGroup {
	var out []scsi.TargetPortGroup
	for _, c := range copies {
		if c.Tag == 0 {
			continue
		}
		g := scsi.TargetPortGroup{ID: c.Tag, State: scsi.ALUAStandby, Supported: scsi.SupportsClusterStates,
			RelativePorts: []uint16{c.Tag}}
		if c.Owner {
			g.Preferred = true
			g.State = scsi.ALUAActiveOptimized
			if (c.Self && !serving) || (!c.Self && c.Down) {
				g.State = scsi.ALUATransitioning
			}
		}
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b scsi.TargetPortGroup) int { return int(a.ID) - int(b.ID) })
	return out
}

// Groups is the scsi.PortGroupState of one LU. A group it does not list is
// Unavailable: a port that belongs to no copy must not serve IO.
type Groups struct {
	mu     sync.RWMutex
	groups []scsi.TargetPortGroup
}

var (
	_ scsi.PortGroupState          = (*Groups)(nil)
	_ scsi.ImplicitTransitionTimer = (*Groups)(nil)
)

// AccessState returns the state of group id.
func (g *Groups) AccessState(id uint16) scsi.AccessState {
	g.mu.RLock()
	defer g.mu.RUnlock()
	for _, tg := range g.groups {
		if tg.ID == id {
			return tg.State
		}
	}
	return scsi.ALUAUnavailable
}

// PortGroups returns a copy of the groups.
func (g *Groups) PortGroups(*scsi.Nexus) []scsi.TargetPortGroup {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]scsi.TargetPortGroup, len(g.groups))
	for i, tg := range g.groups {
		tg.RelativePorts = slices.Clone(tg.RelativePorts)
		out[i] = tg
	}
	return out
}

// ImplicitTransitionTime is what an owner change takes, about: failure
// detection, the failover delay and opening the volume.
func (g *Groups) ImplicitTransitionTime() uint8 { return 10 }

// Set replaces the groups and reports whether a group's state or the set
// of groups changed; the caller then calls (*scsi.LU).PortGroupsChanged.
// Changed groups carry the implicit-transition status code.
func (g *Groups) Set(groups []scsi.TargetPortGroup) bool {
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
