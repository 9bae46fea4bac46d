package cluster

import (
	"encoding/json"
	"maps"
	"slices"
	"sort"
)

// StateFormat is the version of the snapshot encoding of State.
const StateFormat = 1

// Node health as recorded by the leader.
const (
	HealthAlive = "alive"
	HealthDead  = "dead"
	HealthLeft  = "left"
)

// LUN settings.
const (
	IOModeWriteBack    = "wb"
	IOModeWriteThrough = "wt"
	IOModeReadOnly     = "ro"
	BackingFile        = "fileio"
	BackingBlock       = "blockio"
	MaxLUN             = 16383 // flat space addressing, SAM-5 4.7.7
)

// NodeInfo is a cluster member as the state machine knows it.
type NodeInfo struct {
	ID              string `json:"id"`
	APIAddr         string `json:"api_addr"`
	ISCSIPortal     string `json:"iscsi_portal"`
	RaftAddr        string `json:"raft_addr"`
	GossipAddr      string `json:"gossip_addr"`
	ReplicationAddr string `json:"replication_addr,omitempty"`
	// Health is alive, dead or left, as the leader recorded it from
	// memberlist events.
	Health string `json:"health"`
	// Tag is the node's target portal group tag and relative target port
	// identifier in every target (and its ALUA target port group): given
	// once, when the node registers, and never reused, so a node that
	// joins or leaves renumbers no other (sessions, ALUA group IDs and
	// reservations keyed on relative ports stay put). 0 only in a state
	// written before tags existed; the state machine assigns it then.
	Tag uint16 `json:"tag,omitempty"`
}

// CHAP holds a target's CHAP credentials. Secrets never leave the state
// machine through status or logs: see Redact.
type CHAP struct {
	User         string `json:"user"`
	Secret       string `json:"secret"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// Target is an iSCSI target and its LUNs.
type Target struct {
	IQN   string `json:"iqn"`
	Alias string `json:"alias,omitempty"`
	// ACL lists the initiator names allowed to log in, sorted. Empty means
	// any initiator.
	ACL  []string        `json:"acl,omitempty"`
	CHAP *CHAP           `json:"chap,omitempty"`
	LUNs map[uint64]*LUN `json:"luns,omitempty"`
}

// LUN is one logical unit of a target and where its copies live.
type LUN struct {
	Target     string `json:"target"`
	LUN        uint64 `json:"lun"`
	Size       uint64 `json:"size"`
	SectorSize uint32 `json:"sector_size"`
	IOMode     string `json:"io_mode"`
	Backing    string `json:"backing"`
	// Path is the backing file or device; empty means the node picks a
	// file under its data dir.
	Path     string `json:"path,omitempty"`
	Replicas int    `json:"replicas"`
	// Placement lists the nodes that hold a copy; Owner is one of them and
	// serves the LUN Active/Optimized.
	Placement []string `json:"placement"`
	Owner     string   `json:"owner"`
	// Epoch grows with every change of owner; mirrors refuse writes of an
	// older epoch.
	Epoch uint64 `json:"epoch"`
	// InSync lists the copies known identical to the owner's.
	InSync []string `json:"in_sync"`
	// ID is unique among all LUNs the cluster ever created: a LUN created
	// again under the same target and number gets a new backing file, never
	// the old LUN's data.
	ID uint64 `json:"id,omitempty"`
	// Resync holds, per placement node, the last resync progress its
	// owner reported (lun.set_progress). The record outlives the run: once
	// the copy is back in sync it still says how much the last resync
	// copied. A node's record goes when the node leaves the placement.
	Resync map[string]*ResyncProgress `json:"resync,omitempty"`
	// Generations holds, per placement node, the generation of its copy
	// (32 hex digits; DESIGN.md invariant 7): the identity the copy keeps
	// in its identity block. A copy whose own differs, or that has none,
	// is not this copy and counts as out of sync whatever InSync says.
	// Recorded by the owner: for every copy of a new LUN before it first
	// serves (lun.set_generations), and with a copy's join after a full
	// copy (lun.set_in_sync). A node's entry goes when the node leaves the
	// placement. Empty for a LUN created before identities.
	Generations map[string]string `json:"generations,omitempty"`
	// FreshCopies says the copies were created blank (a replicated LUN
	// created with identities) and no owner has recorded their
	// generations yet: no write was ever acknowledged, so the first
	// owner names every copy without comparing it. lun.set_generations
	// clears it.
	FreshCopies bool `json:"fresh_copies,omitempty"`
	// Reservations is the LUN's persistent reservation state as the SCSI
	// layer encodes it (a JSON object; empty: none), ReservationsVersion
	// the number of lun.set_reservations applied to it (reservations.go).
	Reservations        json.RawMessage `json:"reservations,omitempty"`
	ReservationsVersion uint64          `json:"reservations_version,omitempty"`
}

// ResyncProgress is the last reported state of one resync run of a copy.
type ResyncProgress struct {
	// Epoch is the epoch of the owner that ran (reported) it.
	Epoch        uint64  `json:"epoch"`
	RegionsTotal int64   `json:"regions_total"`
	RegionsDone  int64   `json:"regions_done"`
	BytesCopied  int64   `json:"bytes_copied"`
	RateBps      float64 `json:"rate_bps,omitempty"`
	ETAMillis    int64   `json:"eta_ms,omitempty"`
	Done         bool    `json:"done,omitempty"`
}

// State is the whole replicated state. It is a plain value: the FSM owns the
// live copy and hands out deep copies.
type State struct {
	Format  int                  `json:"format"`
	Nodes   map[string]*NodeInfo `json:"nodes"`
	Targets map[string]*Target   `json:"targets"`
	// LastLUNID is the ID of the newest LUN (IDs are never reused).
	LastLUNID uint64 `json:"last_lun_id,omitempty"`
	// LastTag is the highest portal group tag given to a node (tags are
	// never reused).
	LastTag uint16 `json:"last_tag,omitempty"`
	// Reports holds, per node and LUN ID, what the node last reported of
	// its copy (copy.report): whether it serves it, and its last error.
	Reports map[string]map[uint64]*CopyReport `json:"reports,omitempty"`
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Format: StateFormat, Nodes: map[string]*NodeInfo{}, Targets: map[string]*Target{}}
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c := NewState()
	c.Format = s.Format
	c.LastLUNID = s.LastLUNID
	c.LastTag = s.LastTag
	for id, n := range s.Nodes {
		nn := *n
		c.Nodes[id] = &nn
	}
	for iqn, t := range s.Targets {
		c.Targets[iqn] = t.clone()
	}
	s.cloneReports(c)
	return c
}

func (t *Target) clone() *Target {
	c := *t
	c.ACL = slices.Clone(t.ACL)
	if t.CHAP != nil {
		ch := *t.CHAP
		c.CHAP = &ch
	}
	c.LUNs = make(map[uint64]*LUN, len(t.LUNs))
	for n, l := range t.LUNs {
		c.LUNs[n] = l.clone()
	}
	return &c
}

func (l *LUN) clone() *LUN {
	c := *l
	c.Placement = slices.Clone(l.Placement)
	c.InSync = slices.Clone(l.InSync)
	c.Generations = maps.Clone(l.Generations)
	c.Reservations = slices.Clone(l.Reservations)
	if l.Resync != nil {
		c.Resync = make(map[string]*ResyncProgress, len(l.Resync))
		for id, p := range l.Resync {
			if p == nil {
				continue
			}
			pp := *p
			c.Resync[id] = &pp
		}
	}
	return &c
}

// LUNByID returns the LUN whose ID is id and its target, or nil, nil when
// there is none. The pointers are into s.
func (s *State) LUNByID(id uint64) (*Target, *LUN) {
	if id == 0 {
		return nil, nil
	}
	for _, t := range s.Targets {
		for _, l := range t.LUNs {
			if l.ID == id {
				return t, l
			}
		}
	}
	return nil, nil
}

// Redact blanks every secret in s (in place) and returns s.
func (s *State) Redact() *State {
	for _, t := range s.Targets {
		if t.CHAP != nil {
			if t.CHAP.Secret != "" {
				t.CHAP.Secret = "set"
			}
			if t.CHAP.MutualSecret != "" {
				t.CHAP.MutualSecret = "set"
			}
		}
	}
	return s
}

// assignTags gives every node without a portal group tag one: in a state
// written before tags existed, the position among the nodes ordered by ID
// (plus one) that nodes reported then, when no other node has it, else the
// next unused tag. Deterministic: every node applying the same log or
// snapshot assigns the same tags. It reports whether it changed s.
func (s *State) assignTags() bool {
	used := map[uint16]bool{}
	missing := false
	for _, n := range s.Nodes {
		if n.Tag != 0 {
			used[n.Tag] = true
			s.LastTag = max(s.LastTag, n.Tag)
		} else {
			missing = true
		}
	}
	if !missing {
		return false
	}
	for i, n := range s.SortedNodes() {
		if n.Tag != 0 {
			continue
		}
		if t := uint16(i + 1); i < 65535 && !used[t] && t > s.LastTag {
			n.Tag = t
		} else {
			n.Tag = s.nextTag(used)
		}
		used[n.Tag] = true
		s.LastTag = max(s.LastTag, n.Tag)
	}
	return true
}

// nextTag returns the tag after LastTag (wrapping past 65535 to the lowest
// unused one: a cluster would need 65535 registrations to get there).
func (s *State) nextTag(used map[uint16]bool) uint16 {
	if s.LastTag < 65535 {
		return s.LastTag + 1
	}
	for t := uint16(1); t != 0; t++ {
		if !used[t] {
			return t
		}
	}
	return 0
}

// SortedNodes returns the nodes ordered by ID.
func (s *State) SortedNodes() []*NodeInfo {
	out := make([]*NodeInfo, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SortedTargets returns the targets ordered by IQN.
func (s *State) SortedTargets() []*Target {
	out := make([]*Target, 0, len(s.Targets))
	for _, t := range s.Targets {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IQN < out[j].IQN })
	return out
}

// SortedLUNs returns t's LUNs ordered by number.
func (t *Target) SortedLUNs() []*LUN {
	out := make([]*LUN, 0, len(t.LUNs))
	for _, l := range t.LUNs {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LUN < out[j].LUN })
	return out
}

// copiesPerNode counts the LUN copies placed on each node.
func (s *State) copiesPerNode() map[string]int {
	n := map[string]int{}
	for _, t := range s.Targets {
		for _, l := range t.LUNs {
			for _, id := range l.Placement {
				n[id]++
			}
		}
	}
	return n
}

// Place chooses the nodes for a new LUN with the given number of replicas:
// alive nodes, fewest LUN copies first, ties broken by node ID. The first
// is the owner. It is a pure function of s, so the leader can run it before
// proposing and Apply stays deterministic.
func (s *State) Place(replicas int) ([]string, error) {
	if replicas < 1 {
		return nil, errf(ErrInvalid, "replicas must be at least 1, got %d", replicas)
	}
	count := s.copiesPerNode()
	var alive []string
	for id, n := range s.Nodes {
		if n.Health == HealthAlive {
			alive = append(alive, id)
		}
	}
	sort.Slice(alive, func(i, j int) bool {
		a, b := alive[i], alive[j]
		if count[a] != count[b] {
			return count[a] < count[b]
		}
		return a < b
	})
	if len(alive) < replicas {
		return nil, errf(ErrNotEnoughNodes, "%d replicas requested, %d nodes alive", replicas, len(alive))
	}
	return alive[:replicas], nil
}

// target returns the target iqn, or ErrUnknownTarget.
func (s *State) target(iqn string) (*Target, error) {
	t, ok := s.Targets[iqn]
	if !ok {
		return nil, errf(ErrUnknownTarget, "no target %s", iqn)
	}
	return t, nil
}

// lunAtEpoch returns LUN lun of target iqn, or ErrUnknownTarget,
// ErrUnknownLUN, or ErrStaleEpoch when the LUN is not at epoch: the
// compare-and-set every ownership and in-sync change goes through. A
// non-zero id must be the LUN's ID (ErrUnknownLUN otherwise): a proposal
// made for a LUN deleted since, and created again under the same number,
// is refused even at an equal epoch.
func (s *State) lunAtEpoch(iqn string, lun, epoch, id uint64) (*LUN, error) {
	t, err := s.target(iqn)
	if err != nil {
		return nil, err
	}
	l, ok := t.LUNs[lun]
	if !ok {
		return nil, errf(ErrUnknownLUN, "no LUN %d on %s", lun, iqn)
	}
	if epoch != l.Epoch {
		return nil, errf(ErrStaleEpoch, "LUN %d on %s is at epoch %d, not %d", lun, iqn, l.Epoch, epoch)
	}
	if id != 0 && l.ID != id {
		return nil, errf(ErrUnknownLUN, "LUN %d on %s has ID %d, not %d", l.LUN, l.Target, l.ID, id)
	}
	return l, nil
}
