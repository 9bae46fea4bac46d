package target

import "strconv"

// Portal is one network portal of a target, as SendTargets reports it.
type Portal struct {
	// Addr is "ip:port" or "[ipv6]:port".
	Addr string
	TPGT uint16
}

// SendTargetsEntry is one target visible to a discovery session.
type SendTargetsEntry struct {
	Name    string
	Portals []Portal
}

// SendTargetsText answers a SendTargets=<value> request (value "All", or a
// target name, or "" meaning the session's own target) with the
// TargetName/TargetAddress pairs of visible targets (RFC 7143 section
// 11.10.3 and appendix C): each target's TargetName followed by one
// TargetAddress=addr,tpgt per portal.
//
// visible is what the caller allows the session to see: every target the
// initiator may discover for "All" and a name, and the session's own
// target alone for "". A name that is not in visible yields no pairs.
func SendTargetsText(value string, visible []SendTargetsEntry) []KV {
	var kvs []KV
	for _, e := range visible {
		if value != "All" && value != "" && value != e.Name {
			continue
		}
		kvs = append(kvs, KV{Key: "TargetName", Value: e.Name})
		for _, p := range e.Portals {
			kvs = append(kvs, KV{Key: "TargetAddress", Value: p.Addr + "," + strconv.Itoa(int(p.TPGT))})
		}
		if value != "All" && value != "" {
			break
		}
	}
	return kvs
}
