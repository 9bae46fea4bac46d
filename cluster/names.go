package cluster

import (
	"net/http"
	"strings"

	"github.com/hatgt/hatgt/config"
)

// canonicalName checks an iSCSI name (a target's or an initiator's) with
// the config file's rule, config.CanonicalName, and returns it lower case,
// the form the cluster stores: a name the config file refuses is refused
// here too, and :DEMO and :demo are one name in both.
func canonicalName(what, name string) (string, error) {
	c, err := config.CanonicalName(name)
	if err != nil {
		return "", errf(ErrInvalid, "%s name %q: %v", what, name, err)
	}
	return c, nil
}

// resolveIQN returns the name under which s holds the target called name:
// name itself, else the one target whose name equals it ignoring case
// (a state written before names were stored lower case may hold mixed
// case), else name lower case (the form a new target gets).
func (s *State) resolveIQN(name string) string {
	if _, ok := s.Targets[name]; ok {
		return name
	}
	for iqn := range s.Targets {
		if strings.EqualFold(iqn, name) {
			return iqn
		}
	}
	return strings.ToLower(name)
}

// resolveInitiator returns the spelling under which t's ACL holds
// initiator, ignoring case, or initiator lower case.
func (t *Target) resolveInitiator(initiator string) string {
	for _, a := range t.ACL {
		if strings.EqualFold(a, initiator) {
			return a
		}
	}
	return strings.ToLower(initiator)
}

// checkTargetCreate normalizes a new target's name and refuses one that
// exists under another case.
func checkTargetCreate(s *State, p *TargetCreate) error {
	name, err := canonicalName("target", p.IQN)
	if err != nil {
		return err
	}
	for iqn := range s.Targets {
		if strings.EqualFold(iqn, name) {
			return errf(ErrTargetExists, "target %s already exists (iSCSI names ignore case, as in the config file)", iqn)
		}
	}
	p.IQN = name
	return nil
}

// iqn returns the request's {iqn} as the state spells it (resolveIQN), so
// that a target is found whatever the case it is named in.
func (a *API) iqn(r *http.Request) string {
	if a.node == nil {
		return r.PathValue("iqn")
	}
	f := a.node.fsm
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.resolveIQN(r.PathValue("iqn"))
}

// initiator returns initiator as target iqn's ACL spells it (ignoring
// case), or lower case.
func (a *API) initiator(iqn, initiator string) string {
	f := a.node.fsm
	f.mu.RLock()
	defer f.mu.RUnlock()
	if t := f.state.Targets[iqn]; t != nil {
		return t.resolveInitiator(initiator)
	}
	return strings.ToLower(initiator)
}
