package scsi

import "sync"

// StaticPortGroups is a PortGroupState whose groups are set by its owner
// (a configuration, or the cluster's control loop applying what Raft
// committed). A port group it does not list is Unavailable: a port that
// belongs to no known group must not serve I/O.
//
// After SetState the owner calls (*LU).PortGroupsChanged on every LU that
// uses it, so initiators get ASYMMETRIC ACCESS STATE CHANGED.
type StaticPortGroups struct {
	mu     sync.RWMutex
	groups []TargetPortGroup
	itt    uint8
}

// NewStaticPortGroups returns the groups given, reporting an implicit
// transition time of itt seconds (0: unspecified).
func NewStaticPortGroups(itt uint8, groups ...TargetPortGroup) *StaticPortGroups {
	s := &StaticPortGroups{itt: itt}
	for _, g := range groups {
		g.RelativePorts = append([]uint16(nil), g.RelativePorts...)
		s.groups = append(s.groups, g)
	}
	return s
}

// AccessState returns the state of group id, Unavailable if unknown.
func (s *StaticPortGroups) AccessState(id uint16) AccessState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i := range s.groups {
		if s.groups[i].ID == id {
			return s.groups[i].State
		}
	}
	return ALUAUnavailable
}

// PortGroups returns a copy of the groups.
func (s *StaticPortGroups) PortGroups(*Nexus) []TargetPortGroup {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]TargetPortGroup, len(s.groups))
	for i, g := range s.groups {
		g.RelativePorts = append([]uint16(nil), g.RelativePorts...)
		out[i] = g
	}
	return out
}

// ImplicitTransitionTime reports the configured transition time.
func (s *StaticPortGroups) ImplicitTransitionTime() uint8 { return s.itt }

// SetState moves group id to state st as an implicit transition (status
// code 02h) and reports whether the group exists.
func (s *StaticPortGroups) SetState(id uint16, st AccessState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.groups {
		if s.groups[i].ID == id {
			if s.groups[i].State != st {
				s.groups[i].State = st
				s.groups[i].StatusCode = TPGStatusChangedImplicit
			}
			return true
		}
	}
	return false
}
