package agent

import (
	"github.com/hatgt/hatgt/alua"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/scsi"
)

// portGroupsFor computes the ALUA port groups of replicated LUN l as node
// self reports them (see package alua); serving says whether self's own
// volume serves.
func portGroupsFor(st *cluster.State, l cluster.DesiredLUN, self string, serving bool) []scsi.TargetPortGroup {
	copies := make([]alua.Copy, 0, len(l.Placement))
	for _, id := range l.Placement {
		c := alua.Copy{Tag: portalGroupTag(st, id), Owner: id == l.Owner, Self: id == self}
		if st != nil && st.Nodes[id] != nil && st.Nodes[id].Health != cluster.HealthAlive {
			c.Down = true
		}
		copies = append(copies, c)
	}
	return alua.Compute(copies, serving)
}
