package cluster

import (
	"fmt"
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
	LUNs  []LUN       `json:"luns"`
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
		ts := TargetStatus{IQN: t.IQN, Alias: t.Alias, ACL: append([]string{}, t.ACL...), LUNs: []LUN{}}
		if t.CHAP != nil {
			ts.CHAP = &CHAPStatus{User: t.CHAP.User, Secret: "set", MutualUser: t.CHAP.MutualUser}
			if t.CHAP.MutualSecret != "" {
				ts.CHAP.MutualSecret = "set"
			}
		}
		for _, l := range t.SortedLUNs() {
			ts.LUNs = append(ts.LUNs, *l)
		}
		s.Targets = append(s.Targets, ts)
	}
	s.Problem = s.quorumProblem()
	return s
}

func roleName(s raft.RaftState) string {
	switch s {
	case raft.Leader, raft.Follower, raft.Candidate:
		return strings.ToLower(s.String())
	}
	return "none"
}
