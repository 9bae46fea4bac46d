package cluster

import (
	"slices"
	"unicode/utf8"
)

// What a node reports of its copy of a LUN (CopyReport.Service).
const (
	ServiceServing  = "serving"  // the owner serves the LUN (Active/Optimized)
	ServiceStandby  = "standby"  // a copy that is not the owner's, open and ready
	ServiceStarting = "starting" // the owner is opening it (claiming its epoch)
	ServiceFailed   = "failed"   // the node cannot hold or serve it: see the error
)

// What status says of a copy no report describes (CopyStatus.Service).
const (
	ServiceOffline = "offline" // its node is not recorded alive: it reports nothing
	ServiceUnknown = "unknown" // its node has not reported it yet
)

// What status says of a LUN (LUNStatus.Service), besides serving,
// starting and unknown.
const ServiceNotServed = "not-served"

// MaxReportError bounds the error text of a copy report, in bytes.
const MaxReportError = 1024

// CopyReport is what a node last reported of its copy of one LUN: whether
// it serves it, and the last error it met. Times are the reporting node's
// clock (the state machine reads none), in Unix milliseconds.
type CopyReport struct {
	Service string `json:"service"`
	// Since is when the copy entered Service.
	Since int64 `json:"since_ms"`
	// LastError is the last error the node met with this copy, kept after
	// it recovered; LastErrorAt is when it first met that error.
	LastError   string `json:"last_error,omitempty"`
	LastErrorAt int64  `json:"last_error_ms,omitempty"`
}

// CopiesReport is the payload of copy.report: the copies of one node whose
// report changed. Entries for LUNs that are gone or no longer placed on
// Node are ignored (the node saw an older state); applying a report also
// drops the node's records of such LUNs.
type CopiesReport struct {
	Node   string          `json:"node"`
	Copies []LUNCopyReport `json:"copies"`
}

// LUNCopyReport is one LUN's entry of a CopiesReport, by LUN ID.
type LUNCopyReport struct {
	ID uint64 `json:"id"`
	CopyReport
}

func checkCopyReport(r *LUNCopyReport) error {
	switch r.Service {
	case ServiceServing, ServiceStandby, ServiceStarting, ServiceFailed:
	default:
		return errf(ErrInvalid, "copy report of LUN ID %d: service %q: want serving, standby, starting or failed", r.ID, r.Service)
	}
	if r.Since < 0 || r.LastErrorAt < 0 {
		return errf(ErrInvalid, "copy report of LUN ID %d: negative time", r.ID)
	}
	if len(r.LastError) > MaxReportError || !utf8.ValidString(r.LastError) {
		return errf(ErrInvalid, "copy report of LUN ID %d: error text over %d bytes or not UTF-8", r.ID, MaxReportError)
	}
	return nil
}

// applyCopiesReport records a node's copy reports (copy.report).
func (s *State) applyCopiesReport(p *CopiesReport) error {
	if _, ok := s.Nodes[p.Node]; !ok {
		return errf(ErrUnknownNode, "no node %q", p.Node)
	}
	for i := range p.Copies {
		if err := checkCopyReport(&p.Copies[i]); err != nil {
			return err
		}
	}
	placed := s.placedOn(p.Node)
	recs := s.Reports[p.Node]
	for _, r := range p.Copies {
		if !placed[r.ID] {
			continue
		}
		if recs == nil {
			recs = map[uint64]*CopyReport{}
		}
		c := r.CopyReport
		recs[r.ID] = &c
	}
	for id := range recs {
		if !placed[id] {
			delete(recs, id)
		}
	}
	if len(recs) == 0 {
		delete(s.Reports, p.Node)
		return nil
	}
	if s.Reports == nil {
		s.Reports = map[string]map[uint64]*CopyReport{}
	}
	s.Reports[p.Node] = recs
	return nil
}

// placedOn returns the IDs of the LUNs with a copy on node id.
func (s *State) placedOn(id string) map[uint64]bool {
	out := map[uint64]bool{}
	for _, t := range s.Targets {
		for _, l := range t.LUNs {
			if l.ID != 0 && slices.Contains(l.Placement, id) {
				out[l.ID] = true
			}
		}
	}
	return out
}

// Report returns what node id last reported of its copy of the LUN with
// ID lunID, or nil.
func (s *State) Report(id string, lunID uint64) *CopyReport {
	return s.Reports[id][lunID]
}

// staleReports marks every report of node id as not known to hold any
// more (its service empty, its last error kept): the node was recorded
// dead, may have restarted, and reports again what holds now. Status
// shows such a copy unknown meanwhile, not what it served before.
func (s *State) staleReports(id string) {
	for _, r := range s.Reports[id] {
		r.Service, r.Since = "", 0
	}
}

// cloneReports deep-copies the reports of s into c.
func (s *State) cloneReports(c *State) {
	if s.Reports == nil {
		return
	}
	c.Reports = make(map[string]map[uint64]*CopyReport, len(s.Reports))
	for id, recs := range s.Reports {
		m := make(map[uint64]*CopyReport, len(recs))
		for lid, r := range recs {
			if r != nil {
				rr := *r
				m[lid] = &rr
			}
		}
		c.Reports[id] = m
	}
}

// cleanReports drops the nulls a damaged snapshot may hold.
func (s *State) cleanReports() {
	for id, recs := range s.Reports {
		for lid, r := range recs {
			if r == nil {
				delete(recs, lid)
			}
		}
		if len(recs) == 0 {
			delete(s.Reports, id)
		}
	}
}
