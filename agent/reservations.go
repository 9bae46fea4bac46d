package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/scsi"
)

// reservationsNode is what a LUN's cluster-wide reservation store needs
// of the node: a *cluster.Node.
type reservationsNode interface {
	// Apply commits cmd through the leader.
	Apply(ctx context.Context, cmd cluster.Command) (uint64, error)
	// CatchUp returns once this node applied everything the leader had
	// committed when it was called.
	CatchUp(ctx context.Context) error
	// WaitAppliedOn returns once node id says it applied entry idx.
	WaitAppliedOn(ctx context.Context, id string, idx uint64) error
	FSM() *cluster.FSM
}

// reservationsTimeout bounds one PERSISTENT RESERVE OUT's trip through
// Raft, retries included: well inside the 30 s initiators give a command.
const reservationsTimeout = 10 * time.Second

// maxReservationsRetries bounds the recomputations of one PERSISTENT
// RESERVE OUT that lost the race against a change through another node.
const maxReservationsRetries = 16

// clusterReservations is the scsi.ReservationStore of one LUN of a
// cluster: the state lives in Raft (cluster.LUN.Reservations), so a
// PERSISTENT RESERVE OUT through any node's port is seen and enforced by
// every node, and survives a failover. Load serves this node's latest
// applied state from memory; Update computes the transition from it and
// commits it as a compare and set on the LUN's reservation version,
// computing it again when another node's change came first. Every change
// another node made (or that this node's Update gave up on and that
// committed anyway) reaches the LU's watcher in commit order, to deliver
// its unit attentions to this node's I_T nexuses.
//
// The state persists with the cluster, whatever APTPL says: a restart of
// nodes is not a power loss of the logical unit, which lives on while a
// quorum does.
type clusterReservations struct {
	node    reservationsNode
	log     *slog.Logger
	self    string // this node's ID
	iqn     string
	lun, id uint64
	origin  string // this store's proposals are origin/N
	timeout time.Duration

	update sync.Mutex // serialises Updates
	seq    uint64     // under update

	cur atomic.Pointer[resvSnapshot]

	mu sync.Mutex
	// own holds the origins of this store's proposals in flight: true
	// once applied here.
	own     map[string]bool
	watcher func(*scsi.PRState)
	queue   []*scsi.PRState // for the watcher, in commit order
	running bool            // a goroutine drains queue
	unhook  func()
}

// resvSnapshot is one applied state of a LUN's reservations.
type resvSnapshot struct {
	version uint64
	state   *scsi.PRState
	err     error // the committed state did not decode
}

// newClusterReservations returns the store of LUN lun (ID id) of target
// iqn, loaded with the node's applied state. Close releases it.
func newClusterReservations(node reservationsNode, log *slog.Logger, nodeID, iqn string, lun, id uint64) *clusterReservations {
	var nonce [4]byte
	_, _ = rand.Read(nonce[:])
	s := &clusterReservations{
		node: node, log: log, self: nodeID, iqn: iqn, lun: lun, id: id,
		origin:  nodeID + "/" + hex.EncodeToString(nonce[:]),
		timeout: reservationsTimeout,
		own:     map[string]bool{},
	}
	s.cur.Store(&resvSnapshot{state: &scsi.PRState{}})
	s.unhook = node.FSM().OnReservations(s.applied)
	// Read after hooking: a change committed in between is seen by the
	// hook, here, or both (install keeps the newest).
	if l := s.record(); l != nil {
		s.install(l.ReservationsVersion, l.Reservations)
	}
	return s
}

// record returns the LUN as this node's state holds it (a copy), or nil
// when it is gone or another LUN has its number.
func (s *clusterReservations) record() *cluster.LUN {
	iqn, l, ok := s.node.FSM().LUNByID(s.id)
	if !ok || iqn != s.iqn || l.LUN != s.lun {
		return nil
	}
	return l
}

// Close stops hearing of changes; changes already heard are still
// delivered.
func (s *clusterReservations) Close() { s.unhook() }

func decodeReservations(raw json.RawMessage) (*scsi.PRState, error) {
	st := &scsi.PRState{}
	if len(raw) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(raw, st); err != nil {
		return nil, fmt.Errorf("the reservation state in the cluster does not decode: %w", err)
	}
	return st, nil
}

// install makes the state of version v current unless a newer one is.
func (s *clusterReservations) install(v uint64, raw json.RawMessage) {
	st, err := decodeReservations(raw)
	snap := &resvSnapshot{version: v, state: st, err: err}
	for {
		old := s.cur.Load()
		if old.version >= v {
			return
		}
		if s.cur.CompareAndSwap(old, snap) {
			return
		}
	}
}

// applied is the FSM hook: it runs for every applied change of any LUN's
// reservations, with the FSM locked, so it only hands the change over.
func (s *clusterReservations) applied(c cluster.ReservationsChange) {
	if c.IQN != s.iqn || c.LUN != s.lun || c.ID != s.id {
		return
	}
	s.install(c.Version, c.State)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, mine := s.own[c.Origin]; mine {
		s.own[c.Origin] = true // its Update delivers its events
		return
	}
	if st, err := decodeReservations(c.State); err == nil {
		s.enqueueLocked(st)
	}
}

// enqueueLocked queues st for the watcher (s.mu held).
func (s *clusterReservations) enqueueLocked(st *scsi.PRState) {
	if s.watcher == nil {
		return
	}
	s.queue = append(s.queue, st)
	if !s.running {
		s.running = true
		go s.deliver()
	}
}

// deliver hands the queued states to the watcher, one at a time.
func (s *clusterReservations) deliver() {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		st, fn := s.queue[0], s.watcher
		s.queue = s.queue[1:]
		s.mu.Unlock()
		fn(st)
	}
}

// Watch implements scsi.ReservationWatcher.
func (s *clusterReservations) Watch(fn func(*scsi.PRState)) {
	s.mu.Lock()
	s.watcher = fn
	s.mu.Unlock()
}

// PersistsThroughPowerLoss implements scsi.PowerLossPersister: Raft keeps
// the state.
func (s *clusterReservations) PersistsThroughPowerLoss() bool { return true }

// Load implements scsi.ReservationStore.
func (s *clusterReservations) Load() (*scsi.PRState, error) {
	snap := s.cur.Load()
	return snap.state, snap.err
}

// errReservationsUnavailable is what an initiator gets when a change could
// not be committed (no quorum, the LUN going away): NOT READY, as during
// an owner change, so that it retries or tries another path.
var errReservationsUnavailable = scsi.NewSense(scsi.KeyNotReady, scsi.ASCLUNotReadyTransition)

// Update implements scsi.ReservationStore.
func (s *clusterReservations) Update(fn func(*scsi.PRState) error) error {
	s.update.Lock()
	defer s.update.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		snap := s.cur.Load()
		if snap.err != nil {
			return snap.err
		}
		next := snap.state.Clone()
		if err := fn(next); err != nil {
			return err
		}
		raw, err := json.Marshal(next)
		if err != nil {
			return err
		}
		s.seq++
		origin := fmt.Sprintf("%s/%d", s.origin, s.seq)
		cmd, err := cluster.NewCommand(cluster.CmdLUNSetReservations, cluster.LUNSetReservations{
			IQN: s.iqn, LUN: s.lun, ID: s.id, Version: snap.version, Origin: origin, State: raw})
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.own[origin] = false
		s.mu.Unlock()
		idx, err := s.node.Apply(ctx, cmd)
		if err == nil {
			// The hook has run once this node applied it.
			err = s.node.FSM().WaitApplied(ctx, idx)
		}
		s.mu.Lock()
		seen := s.own[origin]
		delete(s.own, origin)
		s.mu.Unlock()
		switch {
		case seen:
			// Committed, and current here (whatever Apply answered: a
			// timeout after the commit is a success). The owner, which
			// checks every command against it, must have it too.
			if err := s.ownerApplied(ctx, idx); err != nil {
				s.log.Warn("persistent reservation change committed, but the LUN's owner did not confirm it applied it", "target", s.iqn, "lun", s.lun, "err", err)
				s.deliverLater(next)
				return errReservationsUnavailable
			}
			return nil
		case errors.Is(err, cluster.ErrStaleReservations) && attempt < maxReservationsRetries:
			// Another node's change came first: compute ours again
			// from the state that includes it.
			if err := s.node.CatchUp(ctx); err != nil {
				s.log.Warn("persistent reservation change not committed: catching up failed", "lun", s.lun, "err", err)
				return errReservationsUnavailable
			}
			continue
		case err == nil:
			err = errors.New("applied, but not seen by this node's reservations hook")
		}
		// Not committed, or not known to be: if it commits after all,
		// the hook delivers it as another node's change.
		s.log.Warn("persistent reservation change not committed", "target", s.iqn, "lun", s.lun, "err", err)
		return errReservationsUnavailable
	}
}

// ownerApplied returns once the LUN's owner applied entry idx (which this
// node applied): at once on the owner, or when the owner says so, or when
// the LUN has another owner since (its takeover is a later entry: it
// applied idx before it serves).
func (s *clusterReservations) ownerApplied(ctx context.Context, idx uint64) error {
	owner, epoch := s.owner()
	if owner == "" || owner == s.self {
		return nil
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := s.node.WaitAppliedOn(wctx, owner, idx)
		cancel()
		if err == nil {
			return nil
		}
		if now, e := s.owner(); now != owner || e != epoch {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
	}
}

// owner returns the LUN's owner and epoch in this node's state.
func (s *clusterReservations) owner() (string, uint64) {
	if l := s.record(); l != nil {
		return l.Owner, l.Epoch
	}
	return "", 0
}

// deliverLater hands st, a state this store committed but whose Update
// fails, to the watcher: the LU delivers its events as another node's.
func (s *clusterReservations) deliverLater(st *scsi.PRState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueueLocked(st)
}

// Sync implements scsi.ReservationSyncer: PERSISTENT RESERVE IN through
// this node shows what any node committed before it (a Raft barrier
// through the leader, then this node's apply).
func (s *clusterReservations) Sync() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	if err := s.node.CatchUp(ctx); err != nil {
		s.log.Warn("persistent reservations not read: catching up with the cluster failed", "target", s.iqn, "lun", s.lun, "err", err)
		return errReservationsUnavailable
	}
	return nil
}
