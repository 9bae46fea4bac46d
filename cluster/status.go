package cluster

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Status is the answer of GET /v1/status. It never holds a secret: CHAP
// secrets read "set".
type Status struct {
	Node        string         `json:"node"`
	Leader      string         `json:"leader"`
	Term        uint64         `json:"term"`
	CommitIndex uint64         `json:"commit_index"`
	Applied     uint64         `json:"applied_index"`
	Nodes       []NodeStatus   `json:"nodes"`
	Targets     []TargetStatus `json:"targets"`
	// Problem, when set, says why the cluster cannot take changes (no
	// leader, and how many voters this node reaches).
	Problem string `json:"problem,omitempty"`
	// Problems lists every LUN that no node serves and every copy that
	// failed, one sentence each.
	Problems []string `json:"problems,omitempty"`
}

// quorumProblem explains a missing leader from the nodes' view: how many
// voters are reachable and how many a quorum needs. Empty with a leader.
func (s *Status) quorumProblem() string {
	if s.Leader != "" {
		return ""
	}
	voters, alive := 0, 0
	for _, n := range s.Nodes {
		if n.Voter {
			voters++
			if n.Alive {
				alive++
			}
		}
	}
	need := voters/2 + 1
	if alive >= need {
		return fmt.Sprintf("no leader yet: an election is under way (%d of %d voters reachable)", alive, voters)
	}
	return fmt.Sprintf("no leader: quorum lost, %d of %d voters reachable, a quorum needs %d; changes are refused until enough voters are back", alive, voters, need)
}

// NodeStatus is one node as this node sees it.
type NodeStatus struct {
	ID              string `json:"id"`
	APIAddr         string `json:"api_addr"`
	ISCSIPortal     string `json:"iscsi_portal"`
	RaftAddr        string `json:"raft_addr"`
	GossipAddr      string `json:"gossip_addr"`
	ReplicationAddr string `json:"replication_addr,omitempty"`
	// RaftRole is leader, follower, candidate or none. This node knows its
	// own role; another node is leader, follower (a voter) or none.
	RaftRole string `json:"raft_role"`
	Voter    bool   `json:"voter"`
	// Alive is memberlist's view from this node; Health is what the leader
	// recorded in the state machine.
	Alive  bool   `json:"alive"`
	Health string `json:"health"`
	// LastContact is how long ago this node last heard from that one
	// (memberlist probe ack), -1 when never.
	LastContactMS int64 `json:"last_contact_ms"`
}

// TargetStatus is a target without secrets.
type TargetStatus struct {
	IQN   string      `json:"iqn"`
	Alias string      `json:"alias,omitempty"`
	ACL   []string    `json:"acl"`
	CHAP  *CHAPStatus `json:"chap,omitempty"`
	LUNs  []LUNStatus `json:"luns"`
}

// LUNStatus is a LUN as the state machine holds it (its JSON fields flat:
// owner, epoch, in_sync, placement, ...) and the state of each copy.
type LUNStatus struct {
	LUN
	Copies []CopyStatus `json:"copies"`
	// Service is serving (its owner reports it serves it), starting,
	// unknown (no report from its owner yet), or not-served: Problem then
	// says why.
	Service string `json:"service"`
	Problem string `json:"problem,omitempty"`
}

// States of a LUN copy in CopyStatus.
const (
	CopyInSync    = "in-sync"     // in the in-sync set
	CopyResyncing = "resyncing"   // the owner of this epoch is copying what it lacks
	CopyOutOfSync = "out-of-sync" // lacks writes, no resync running
	CopyOffline   = "offline"     // its node is not recorded alive
)

// CopyStatus is one copy of a LUN: the state of its node's copy and what
// the last resync reported for it.
type CopyStatus struct {
	Node  string `json:"node"`
	State string `json:"state"`
	Owner bool   `json:"owner,omitempty"`
	// ResyncPercent is 100 in sync, else how far the resync of this
	// epoch got (0 without one).
	ResyncPercent float64 `json:"resync_percent"`
	// BytesCopied is what the last resync reported, of any epoch, even
	// one that finished long ago.
	BytesCopied int64 `json:"bytes_copied"`
	// RateBps and ETASeconds are set while resyncing.
	RateBps    float64 `json:"rate_bps,omitempty"`
	ETASeconds float64 `json:"eta_seconds,omitempty"`
	// Whether the copy's node serves it, and its last error.
	CopyService
}

// LUNStatus returns l with the status of its copies, one per placement
// node in placement order, from the node health and resync progress in s:
// offline when the node is not recorded alive (whatever else holds), else
// in-sync, else resyncing while a progress record of l's epoch is not
// done, else out-of-sync.
func (s *State) LUNStatus(l *LUN) LUNStatus {
	ls := LUNStatus{LUN: *l.clone(), Copies: make([]CopyStatus, 0, len(l.Placement))}
	for _, id := range l.Placement {
		cs := CopyStatus{Node: id, Owner: id == l.Owner}
		rec := l.Resync[id]
		if rec != nil {
			cs.BytesCopied = rec.BytesCopied
		}
		cur := rec != nil && rec.Epoch == l.Epoch
		if cur && rec.RegionsTotal > 0 {
			cs.ResyncPercent = float64(rec.RegionsDone) / float64(rec.RegionsTotal) * 100
		} else if cur && rec.Done {
			cs.ResyncPercent = 100 // nothing was dirty
		}
		switch {
		case slices.Contains(l.InSync, id):
			cs.State = CopyInSync
			cs.ResyncPercent = 100
		case cur && !rec.Done:
			cs.State = CopyResyncing
			cs.RateBps = rec.RateBps
			cs.ETASeconds = float64(rec.ETAMillis) / 1000
		default:
			cs.State = CopyOutOfSync
		}
		if ni := s.Nodes[id]; ni == nil || ni.Health != HealthAlive {
			cs.State = CopyOffline
			cs.RateBps, cs.ETASeconds = 0, 0
		}
		cs.CopyService = s.copyService(l, id)
		ls.Copies = append(ls.Copies, cs)
	}
	ls.Service, ls.Problem = lunService(l, ls.Copies)
	return ls
}

// CHAPStatus shows CHAP user names and whether secrets are set.
type CHAPStatus struct {
	User         string `json:"user"`
	Secret       string `json:"secret"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// Status reports the cluster as this node sees it.
func (n *Node) Status() Status {
	st := n.fsm.State()
	leader, _ := n.Leader()
	s := Status{
		Node:        n.cfg.NodeID,
		Leader:      leader,
		Term:        n.raft.CurrentTerm(),
		CommitIndex: n.raft.CommitIndex(),
		Applied:     n.raft.AppliedIndex(),
		Nodes:       []NodeStatus{},
		Targets:     []TargetStatus{},
	}
	voters := map[string]bool{}
	for _, id := range n.voters() {
		voters[id] = true
	}
	alive := n.gossipAlive()
	n.mu.Lock()
	seen := make(map[string]time.Time, len(n.lastSeen))
	for k, v := range n.lastSeen {
		seen[k] = v
	}
	n.mu.Unlock()
	now := time.Now()
	add := func(ni NodeInfo) {
		ns := NodeStatus{
			ID: ni.ID, APIAddr: ni.APIAddr, ISCSIPortal: ni.ISCSIPortal, RaftAddr: ni.RaftAddr,
			GossipAddr: ni.GossipAddr, ReplicationAddr: ni.ReplicationAddr,
			Voter: voters[ni.ID], Alive: alive[ni.ID], Health: ni.Health, LastContactMS: -1,
		}
		switch {
		case ni.ID == n.cfg.NodeID:
			ns.RaftRole = roleName(n.raft.State())
			ns.LastContactMS = 0
		case ni.ID == leader:
			ns.RaftRole = "leader"
		case ns.Voter:
			ns.RaftRole = "follower"
		default:
			ns.RaftRole = "none"
		}
		if t, ok := seen[ni.ID]; ok && ni.ID != n.cfg.NodeID {
			ns.LastContactMS = now.Sub(t).Milliseconds()
		}
		s.Nodes = append(s.Nodes, ns)
	}
	for _, ni := range st.SortedNodes() {
		add(*ni)
		delete(voters, ni.ID)
	}
	for id := range voters { // voters not registered (yet)
		ni, _ := n.gossipMeta(id)
		ni.ID = id
		add(ni)
	}
	for _, t := range st.SortedTargets() {
		ts := TargetStatus{IQN: t.IQN, Alias: t.Alias, ACL: append([]string{}, t.ACL...), LUNs: []LUNStatus{}}
		if t.CHAP != nil {
			ts.CHAP = &CHAPStatus{User: t.CHAP.User, Secret: "set", MutualUser: t.CHAP.MutualUser}
			if t.CHAP.MutualSecret != "" {
				ts.CHAP.MutualSecret = "set"
			}
		}
		for _, l := range t.SortedLUNs() {
			ts.LUNs = append(ts.LUNs, st.LUNStatus(l))
		}
		s.Targets = append(s.Targets, ts)
	}
	s.Problem = s.quorumProblem()
	s.Problems = s.lunProblems()
	return s
}

func roleName(s raft.RaftState) string {
	switch s {
	case raft.Leader, raft.Follower, raft.Candidate:
		return strings.ToLower(s.String())
	}
	return "none"
}
