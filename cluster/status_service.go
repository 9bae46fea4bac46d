package cluster

import (
	"fmt"
	"slices"
	"time"
)

// CopyService is what status says of whether a copy serves: what its node
// last reported (CopyReport), or offline or unknown without a report that
// holds.
type CopyService struct {
	// Service is serving (the owner serves the LUN), standby (a copy
	// ready to take over), starting, failed (LastError says why), offline
	// (its node is not recorded alive, and reports nothing), or unknown
	// (its node has not reported it yet).
	Service string `json:"service"`
	// ServiceSince is when the copy entered Service, by its node's clock.
	ServiceSince time.Time `json:"service_since,omitzero"`
	// LastError is the last error its node met with this copy, kept after
	// a recovery; LastErrorAt is when (its node's clock).
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// copyService is node id's copy of l as its reports and health say.
func (s *State) copyService(l *LUN, id string) CopyService {
	var cs CopyService
	r := s.Report(id, l.ID)
	if r != nil {
		cs.LastError = r.LastError
		if r.LastErrorAt > 0 {
			cs.LastErrorAt = time.UnixMilli(r.LastErrorAt).UTC()
		}
	}
	switch ni := s.Nodes[id]; {
	case ni == nil || ni.Health != HealthAlive:
		cs.Service = ServiceOffline
	case r == nil || r.Service == "":
		cs.Service = ServiceUnknown
	default:
		cs.Service = r.Service
		if r.Since > 0 {
			cs.ServiceSince = time.UnixMilli(r.Since).UTC()
		}
	}
	return cs
}

// lunService says whether anyone serves l, from its copies' service (in
// placement order, as LUNStatus lists them): serving when its owner
// reports serving, starting, unknown before the owner reported, else
// not-served with the reason.
func lunService(l *LUN, copies []CopyStatus) (service, problem string) {
	what := fmt.Sprintf("LUN %d of %s", l.LUN, l.Target)
	if l.Owner == "" {
		return ServiceNotServed, what + " is served by no node: it has no owner, no copy being in sync"
	}
	var owner *CopyStatus
	standby := ""
	for i := range copies {
		c := &copies[i]
		if c.Node == l.Owner {
			owner = c
		} else if standby == "" && c.State == CopyInSync && c.Service != ServiceOffline && c.Service != ServiceFailed {
			standby = c.Node
		}
	}
	if owner == nil {
		return ServiceUnknown, ""
	}
	switch owner.Service {
	case ServiceServing:
		return ServiceServing, ""
	case ServiceUnknown:
		return ServiceUnknown, ""
	case ServiceStarting, ServiceStandby:
		return ServiceStarting, ""
	case ServiceOffline:
		if standby != "" {
			return ServiceNotServed, fmt.Sprintf("%s is served by no node: its owner %s is offline; the in-sync copy on %s takes over once the failover delay passed", what, l.Owner, standby)
		}
		return ServiceNotServed, fmt.Sprintf("%s is served by no node: its owner %s is offline and no other in-sync copy is alive; bring %s back", what, l.Owner, l.Owner)
	}
	return ServiceNotServed, fmt.Sprintf("%s is served by no node: its owner %s cannot serve it: %s", what, l.Owner, owner.LastError)
}

// problems lists what status must show at a glance: every LUN no node
// serves, and every copy that failed.
func (s *Status) lunProblems() []string {
	var out []string
	for _, t := range s.Targets {
		for _, l := range t.LUNs {
			if l.Problem != "" {
				out = append(out, l.Problem)
			}
			for _, c := range l.Copies {
				if c.Service == ServiceFailed && (c.Node != l.Owner || l.Problem == "") {
					out = append(out, fmt.Sprintf("the copy of LUN %d of %s on %s failed: %s", l.LUN.LUN, t.IQN, c.Node, c.LastError))
				}
			}
		}
	}
	return slices.Clip(out)
}
