package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// FSM is the hatgt state machine. It implements raft.FSM.
//
// Apply is deterministic: it reads only the state and the command, never a
// clock, randomness or the local disk, so every node that applies the same
// log holds the same state. A command that fails validation changes nothing
// and returns an *Error (as the Apply response) instead.
type FSM struct {
	log hclog.Logger

	mu      sync.RWMutex
	state   *State
	applied uint64 // index of the last applied entry
	changed chan struct{}
	// appliedCh is closed, and replaced, whenever applied grows
	// (WaitApplied).
	appliedCh chan struct{}

	subMu   sync.Mutex
	subs    map[int]chan struct{}
	nextSub int

	resvHooks reservationHooks
	// resvApplied is the change the command being applied made to a
	// LUN's reservations, for the hooks (set and taken under mu).
	resvApplied *ReservationsChange
}

// NewFSM returns an FSM with an empty state.
func NewFSM(logger hclog.Logger) *FSM {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &FSM{log: logger, state: NewState(), changed: make(chan struct{}, 1)}
}

// State returns a deep copy of the current state (with secrets).
func (f *FSM) State() *State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// AppliedIndex returns the index of the last applied log entry.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// Changed is signalled (without blocking, coalesced) after every apply and
// restore.
func (f *FSM) Changed() <-chan struct{} { return f.changed }

// Subscribe returns a channel of capacity 1 that is signalled, without
// blocking and so coalesced, after every command applied without error and
// after every Restore; a refused command signals nothing. A subscriber
// reads the state after each signal: it sees every change, though several
// commits may have happened in between. cancel unsubscribes (the channel
// is not closed); it may be called more than once.
func (f *FSM) Subscribe() (ch <-chan struct{}, cancel func()) {
	c := make(chan struct{}, 1)
	f.subMu.Lock()
	if f.subs == nil {
		f.subs = map[int]chan struct{}{}
	}
	id := f.nextSub
	f.nextSub++
	f.subs[id] = c
	f.subMu.Unlock()
	return c, func() {
		f.subMu.Lock()
		delete(f.subs, id)
		f.subMu.Unlock()
	}
}

// notify signals Changed, and the subscribers when the state changed.
func (f *FSM) notify(changed bool) {
	select {
	case f.changed <- struct{}{}:
	default:
	}
	if !changed {
		return
	}
	f.subMu.Lock()
	for _, c := range f.subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	f.subMu.Unlock()
}

// Apply applies one log entry. It returns nil or an *Error.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := DecodeCommand(l.Data)
	f.mu.Lock()
	if err == nil {
		err = f.applyLocked(cmd)
	}
	// The hooks run before the index counts as applied: whoever waits
	// for it (WaitApplied) finds them run.
	f.takeReservationsApplied()
	f.setAppliedLocked(l.Index)
	f.mu.Unlock()
	f.notify(err == nil)
	if err != nil {
		// The message names objects, never secrets.
		f.log.Debug("command refused", "index", l.Index, "type", cmd.Type, "error", err)
		return err
	}
	f.log.Trace("command applied", "index", l.Index, "type", cmd.Type)
	return nil
}

// ApplyCommand applies cmd outside Raft (tests, tools). Same rules as Apply.
func (f *FSM) ApplyCommand(cmd Command) error {
	f.mu.Lock()
	err := f.applyLocked(cmd)
	f.takeReservationsApplied()
	f.mu.Unlock()
	f.notify(err == nil)
	return err
}

func decodePayload(cmd Command, v any) error {
	if cmd.Version < 1 || cmd.Version > CommandVersion {
		return errf(ErrUnsupportedVersion, "%s version %d not supported (max %d)", cmd.Type, cmd.Version, CommandVersion)
	}
	if err := json.Unmarshal(cmd.Payload, v); err != nil {
		return errf(ErrBadCommand, "%s: bad payload", cmd.Type)
	}
	return nil
}

// applyLocked validates cmd against the state and changes it only when the
// whole command is valid.
func (f *FSM) applyLocked(cmd Command) error {
	s := f.state
	switch cmd.Type {
	case CmdNodeRegister:
		var p NodeRegister
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		if err := checkNodeInfo(&p.Node); err != nil {
			return err
		}
		n := p.Node
		n.Health = HealthAlive
		n.Tag = 0
		if old := s.Nodes[n.ID]; old != nil {
			n.Tag = old.Tag // a node keeps its tag across re-registrations
		}
		s.Nodes[n.ID] = &n
		s.assignTags()
	case CmdNodeHealth:
		var p NodeHealth
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		n, ok := s.Nodes[p.ID]
		if !ok {
			return errf(ErrUnknownNode, "no node %q", p.ID)
		}
		switch p.Health {
		case HealthAlive, HealthDead, HealthLeft:
		default:
			return errf(ErrInvalid, "health %q: want alive, dead or left", p.Health)
		}
		if n.Health != HealthAlive && p.Health == HealthAlive {
			s.staleReports(p.ID) // back from the dead: what it served before is unknown
		}
		n.Health = p.Health
	case CmdNodeRemove:
		var p NodeRemove
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		if _, ok := s.Nodes[p.ID]; !ok {
			return errf(ErrUnknownNode, "no node %q", p.ID)
		}
		delete(s.Nodes, p.ID)
		delete(s.Reports, p.ID)
		for _, t := range s.Targets {
			for _, l := range t.LUNs {
				dropCopy(l, p.ID)
			}
		}
	case CmdTargetCreate:
		var p TargetCreate
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		if !validName(p.IQN) {
			return errf(ErrInvalid, "bad target name %q", p.IQN)
		}
		if len(p.Alias) > 255 {
			return errf(ErrInvalid, "alias too long")
		}
		if _, ok := s.Targets[p.IQN]; ok {
			return errf(ErrTargetExists, "target %s already exists", p.IQN)
		}
		s.Targets[p.IQN] = &Target{IQN: p.IQN, Alias: p.Alias, LUNs: map[uint64]*LUN{}}
	case CmdTargetDelete:
		var p TargetDelete
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		t, err := s.target(p.IQN)
		if err != nil {
			return err
		}
		if len(t.LUNs) > 0 {
			return errf(ErrTargetHasLUNs, "target %s still has %d LUNs", p.IQN, len(t.LUNs))
		}
		delete(s.Targets, p.IQN)
	case CmdLUNCreate:
		var p LUNCreate
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		return f.lunCreate(&p.LUN)
	case CmdLUNDelete:
		var p LUNDelete
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		t, err := s.target(p.IQN)
		if err != nil {
			return err
		}
		if _, ok := t.LUNs[p.LUN]; !ok {
			return errf(ErrUnknownLUN, "no LUN %d on %s", p.LUN, p.IQN)
		}
		delete(t.LUNs, p.LUN)
	case CmdLUNSetOwner:
		var p LUNSetOwner
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		l, err := s.lunAtEpoch(p.IQN, p.LUN, p.Epoch, 0)
		if err != nil {
			return err
		}
		if !slices.Contains(l.InSync, p.Owner) {
			return errf(ErrInvalid, "node %q is not in the in-sync set of LUN %d on %s", p.Owner, p.LUN, p.IQN)
		}
		l.Owner = p.Owner
		l.Epoch++
	case CmdLUNSetInSync:
		var p LUNSetInSync
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		l, err := s.lunAtEpoch(p.IQN, p.LUN, p.Epoch, p.ID)
		if err != nil {
			return err
		}
		if !slices.Contains(l.Placement, p.Node) {
			return errf(ErrInvalid, "node %q holds no copy of LUN %d on %s", p.Node, p.LUN, p.IQN)
		}
		if p.Generation != "" {
			if !p.InSync {
				return errf(ErrInvalid, "a generation is recorded only with a copy's join")
			}
			if err := checkGeneration(p.Node, p.Generation); err != nil {
				return err
			}
			// A join cannot fail below: record it now.
			if l.Generations == nil {
				l.Generations = map[string]string{}
			}
			l.Generations[p.Node] = p.Generation
		}
		in := slices.Contains(l.InSync, p.Node)
		switch {
		case p.InSync && !in:
			l.InSync = append(l.InSync, p.Node)
			// Keep placement order, so equal sets look equal everywhere.
			l.InSync = slices.DeleteFunc(slices.Clone(l.Placement), func(id string) bool {
				return !slices.Contains(l.InSync, id)
			})
		case !p.InSync && in:
			if p.Node == l.Owner {
				return errf(ErrInvalid, "the owner %q of LUN %d on %s cannot leave its in-sync set", p.Node, p.LUN, p.IQN)
			}
			l.InSync = slices.DeleteFunc(l.InSync, func(id string) bool { return id == p.Node })
		}
	case CmdLUNSetGens:
		var p LUNSetGenerations
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		l, err := s.lunAtEpoch(p.IQN, p.LUN, p.Epoch, p.ID)
		if err != nil {
			return err
		}
		for node, g := range p.Generations {
			if !slices.Contains(l.Placement, node) {
				return errf(ErrInvalid, "node %q holds no copy of LUN %d on %s", node, p.LUN, p.IQN)
			}
			if err := checkGeneration(node, g); err != nil {
				return err
			}
		}
		if len(p.Generations) > 0 && l.Generations == nil {
			l.Generations = map[string]string{}
		}
		maps.Copy(l.Generations, p.Generations)
		l.FreshCopies = false
	case CmdLUNAddCopy:
		var p LUNAddCopy
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		l, err := s.lunAtEpoch(p.IQN, p.LUN, p.Epoch, p.ID)
		if err != nil {
			return err
		}
		ni, ok := s.Nodes[p.Node]
		switch {
		case !ok:
			return errf(ErrUnknownNode, "no node %q", p.Node)
		case ni.Health != HealthAlive:
			return errf(ErrInvalid, "node %q is %s: a new copy goes on an alive node", p.Node, ni.Health)
		case slices.Contains(l.Placement, p.Node):
			return errf(ErrInvalid, "node %q already holds a copy of LUN %d on %s", p.Node, p.LUN, p.IQN)
		case len(l.Placement) >= l.Replicas:
			return errf(ErrInvalid, "LUN %d on %s already has its %d copies", p.LUN, p.IQN, l.Replicas)
		}
		l.Placement = append(l.Placement, p.Node)
	case CmdLUNSetProgress:
		var p LUNSetProgress
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		l, err := s.lunAtEpoch(p.IQN, p.LUN, p.Epoch, p.ID)
		if err != nil {
			return err
		}
		if !slices.Contains(l.Placement, p.Node) {
			return errf(ErrInvalid, "node %q holds no copy of LUN %d on %s", p.Node, p.LUN, p.IQN)
		}
		if err := checkProgress(&p); err != nil {
			return err
		}
		if l.Resync == nil {
			l.Resync = map[string]*ResyncProgress{}
		}
		l.Resync[p.Node] = &ResyncProgress{
			Epoch: p.Epoch, RegionsTotal: p.RegionsTotal, RegionsDone: p.RegionsDone,
			BytesCopied: p.BytesCopied, RateBps: p.RateBps, ETAMillis: p.ETAMillis, Done: p.Done,
		}
	case CmdACLAdd, CmdACLRemove:
		var p ACLChange
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		t, err := s.target(p.IQN)
		if err != nil {
			return err
		}
		if !validName(p.Initiator) {
			return errf(ErrInvalid, "bad initiator name %q", p.Initiator)
		}
		i := slices.Index(t.ACL, p.Initiator)
		if cmd.Type == CmdACLAdd {
			if i >= 0 {
				return errf(ErrACLExists, "initiator %s already in the ACL of %s", p.Initiator, p.IQN)
			}
			t.ACL = append(t.ACL, p.Initiator)
			sort.Strings(t.ACL)
		} else {
			if i < 0 {
				return errf(ErrUnknownACL, "initiator %s not in the ACL of %s", p.Initiator, p.IQN)
			}
			t.ACL = slices.Delete(t.ACL, i, i+1)
		}
	case CmdCHAPSet:
		var p CHAPSet
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		t, err := s.target(p.IQN)
		if err != nil {
			return err
		}
		if err := checkCHAP(&p.CHAP); err != nil {
			return err
		}
		c := p.CHAP
		t.CHAP = &c
	case CmdLUNSetReservations:
		var p LUNSetReservations
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		c, err := s.applySetReservations(&p)
		if err != nil {
			return err
		}
		f.resvApplied = c
	case CmdCopyReport:
		var p CopiesReport
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		return s.applyCopiesReport(&p)
	case CmdCHAPClear:
		var p CHAPClear
		if err := decodePayload(cmd, &p); err != nil {
			return err
		}
		t, err := s.target(p.IQN)
		if err != nil {
			return err
		}
		t.CHAP = nil
	default:
		return errf(ErrUnknownCommand, "unknown command type %q", cmd.Type)
	}
	return nil
}

func (f *FSM) lunCreate(l *LUN) error {
	s := f.state
	t, ok := s.Targets[l.Target]
	if !ok {
		return errf(ErrUnknownTarget, "no target %s", l.Target)
	}
	if err := checkLUNSettings(l); err != nil {
		return err
	}
	if _, ok := t.LUNs[l.LUN]; ok {
		return errf(ErrLUNExists, "LUN %d already exists on %s", l.LUN, l.Target)
	}
	if len(l.Placement) != l.Replicas {
		return errf(ErrInvalid, "placement has %d nodes for %d replicas", len(l.Placement), l.Replicas)
	}
	seen := map[string]bool{}
	for _, id := range l.Placement {
		if _, ok := s.Nodes[id]; !ok {
			return errf(ErrUnknownNode, "placement names unknown node %q", id)
		}
		if seen[id] {
			return errf(ErrInvalid, "placement names node %q twice", id)
		}
		seen[id] = true
	}
	if !seen[l.Owner] {
		return errf(ErrInvalid, "owner %q is not in the placement", l.Owner)
	}
	n := l.clone()
	// A new LUN's copies are all empty, so all are in sync; epoch 1 is the
	// first owner's. Their generations are the first owner's to record
	// (FreshCopies, when the leader set it).
	n.InSync = slices.Clone(n.Placement)
	n.Generations = nil
	n.Epoch = 1
	if l.ID != 0 {
		// Chosen by the leader (createLUN), so that the nodes could
		// prepare the LUN's files, named by its ID, before this entry.
		if l.ID <= s.LastLUNID {
			return errf(ErrInvalid, "LUN ID %d is taken (the last is %d): create the LUN again", l.ID, s.LastLUNID)
		}
		s.LastLUNID = l.ID
	} else {
		s.LastLUNID++
	}
	n.ID = s.LastLUNID
	t.LUNs[n.LUN] = n
	return nil
}

// dropCopy removes node id from l's placement and in-sync set. If it owned
// l, the first remaining in-sync node (in placement order) takes over under
// a new epoch; with none left the LUN has no owner.
func dropCopy(l *LUN, id string) {
	if !slices.Contains(l.Placement, id) {
		return
	}
	l.Placement = slices.DeleteFunc(l.Placement, func(s string) bool { return s == id })
	delete(l.Resync, id)
	if len(l.Resync) == 0 {
		l.Resync = nil
	}
	delete(l.Generations, id)
	l.InSync = slices.DeleteFunc(l.InSync, func(s string) bool { return s == id })
	if l.Owner == id {
		l.Owner = ""
		for _, p := range l.Placement {
			if slices.Contains(l.InSync, p) {
				l.Owner = p
				break
			}
		}
		l.Epoch++
	}
}

// LUNByID returns a copy of the LUN whose ID is id, and its target's IQN,
// without copying the whole state.
func (f *FSM) LUNByID(id uint64) (iqn string, l *LUN, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	t, lun := f.state.LUNByID(id)
	if lun == nil {
		return "", nil, false
	}
	return t.IQN, lun.clone(), true
}

// Snapshot returns a point-in-time copy of the state.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{state: f.state.Clone()}, nil
}

// Restore replaces the whole state with the snapshot in rc.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := DecodeState(rc)
	if err != nil {
		return err
	}
	s.assignTags()
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
	f.notify(true)
	return nil
}

// EncodeState writes s in the snapshot encoding (JSON, map keys sorted, so
// equal states encode to equal bytes).
func EncodeState(w io.Writer, s *State) error {
	return json.NewEncoder(w).Encode(s)
}

// DecodeState reads a snapshot written by EncodeState.
func DecodeState(r io.Reader) (*State, error) {
	s := NewState()
	if err := json.NewDecoder(r).Decode(s); err != nil {
		return nil, fmt.Errorf("cluster: decode snapshot: %w", err)
	}
	if s.Format < 1 || s.Format > StateFormat {
		return nil, fmt.Errorf("cluster: snapshot format %d not supported (max %d)", s.Format, StateFormat)
	}
	if s.Nodes == nil {
		s.Nodes = map[string]*NodeInfo{}
	}
	for id, n := range s.Nodes {
		if n == nil {
			delete(s.Nodes, id)
		}
	}
	if s.Targets == nil {
		s.Targets = map[string]*Target{}
	}
	s.cleanReports()
	// A hand-edited or damaged snapshot may hold nulls: drop them rather
	// than fail later on a nil pointer.
	for iqn, t := range s.Targets {
		if t == nil {
			delete(s.Targets, iqn)
			continue
		}
		if t.LUNs == nil {
			t.LUNs = map[uint64]*LUN{}
		}
		for n, l := range t.LUNs {
			if l == nil {
				delete(t.LUNs, n)
				continue
			}
			for id, p := range l.Resync {
				if p == nil {
					delete(l.Resync, id)
				}
			}
		}
	}
	return s, nil
}

type fsmSnapshot struct{ state *State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := EncodeState(sink, s.state); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
