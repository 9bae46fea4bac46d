package target

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
// TargetName/TargetAddress pairs of visible targets.
func SendTargetsText(value string, visible []SendTargetsEntry) []KV { return nil }
