package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/hatgt/hatgt/replication"
)

// ProgressInterval is the least time between two lun.set_progress
// proposals for one copy of a LUN, besides the first and the last (Done)
// report of a run, which always go through.
const ProgressInterval = time.Second

// progressSlack is how much sooner than ProgressInterval after the last
// proposal a report still goes through. The owner reports once per
// interval by its own clock, taken before it calls ReportProgress; the
// time this one reads a moment later varies by milliseconds, so without
// slack about every other report of a steady run fell just short of the
// interval and was left out.
const progressSlack = ProgressInterval / 20

// Coordinator is the replication.Coordinator of a cluster node: views come
// from this node's copy of the state machine, and in-sync changes and
// resync progress are proposed through Node.Apply, which forwards them to
// the leader and returns once they are committed.
//
// A replication.LUNID is the cluster's LUN.ID, so a LUN deleted and created
// again under the same number is another LUN for replication: proposals
// carry the ID, and the state machine refuses them for the new LUN.
//
// View reads the state this node has applied, which may trail the leader
// by the entries not yet applied here; every change is a compare-and-set
// on the epoch at the leader, so a proposal made from a stale view fails
// (with an error matching replication.ErrNotOwner) instead of applying.
type Coordinator struct {
	fsm   *FSM
	apply func(context.Context, Command) error
	// now is the clock of the progress throttle (tests replace it).
	now func() time.Time

	mu       sync.Mutex
	reported map[progressKey]progressMark
}

var (
	_ replication.Coordinator      = (*Coordinator)(nil)
	_ replication.ProgressReporter = (*Coordinator)(nil)
)

type progressKey struct {
	lun  replication.LUNID
	node replication.NodeID
}

// progressMark is the last report of a copy that was proposed.
type progressMark struct {
	epoch   uint64
	started time.Time
	done    bool
	at      time.Time
}

// NewCoordinator returns the Coordinator of node n.
func NewCoordinator(n *Node) *Coordinator {
	return newCoordinator(n.FSM(), func(ctx context.Context, cmd Command) error {
		_, err := n.Apply(ctx, cmd)
		return err
	})
}

// newCoordinator is NewCoordinator over any FSM and way of committing
// commands (tests apply them to the FSM directly).
func newCoordinator(fsm *FSM, apply func(context.Context, Command) error) *Coordinator {
	return &Coordinator{fsm: fsm, apply: apply, now: time.Now, reported: map[progressKey]progressMark{}}
}

// viewOf is what replication sees of l. Gens is never nil: the cluster
// records copy identities, so a LUN from before them (none recorded) has
// its copies checked too.
func viewOf(l *LUN) replication.View {
	v := replication.View{Epoch: l.Epoch, Owner: replication.NodeID(l.Owner), Fresh: l.FreshCopies,
		Gens: make(map[replication.NodeID]replication.Generation, len(l.Generations))}
	for _, id := range l.Placement {
		v.Replicas = append(v.Replicas, replication.NodeID(id))
	}
	for _, id := range l.InSync {
		v.InSync = append(v.InSync, replication.NodeID(id))
	}
	for id, s := range l.Generations {
		// The state machine took only valid ones.
		if g, err := replication.ParseGeneration(s); err == nil && !g.IsZero() {
			v.Gens[replication.NodeID(id)] = g
		}
	}
	return v
}

func sameView(a, b replication.View) bool {
	return a.Epoch == b.Epoch && a.Owner == b.Owner && slices.Equal(a.Replicas, b.Replicas) && slices.Equal(a.InSync, b.InSync) &&
		a.Fresh == b.Fresh && maps.Equal(a.Gens, b.Gens)
}

func noLUN(lun replication.LUNID) error {
	return fmt.Errorf("%w: no LUN with ID %d", replication.ErrNotOwner, uint64(lun))
}

// proposalErr makes the refusals that mean "your view is old" match
// replication.ErrNotOwner (through ErrStaleView), keeping the cluster's
// error (and its message) in the chain. Other errors, such as ErrNoLeader
// without a quorum, are returned as they are.
func proposalErr(err error) error {
	if errors.Is(err, ErrStaleEpoch) || errors.Is(err, ErrUnknownLUN) || errors.Is(err, ErrUnknownTarget) {
		return fmt.Errorf("%w: %w", replication.ErrStaleView, err)
	}
	return err
}

// View returns the view of lun in the state this node has applied. An
// unknown ID gives an error that matches replication.ErrNotOwner.
func (c *Coordinator) View(ctx context.Context, lun replication.LUNID) (replication.View, error) {
	_, l, ok := c.fsm.LUNByID(uint64(lun))
	if !ok {
		return replication.View{}, noLUN(lun)
	}
	return viewOf(l), nil
}

// CheckEpoch is the replication.EpochCheck of this node's Mirror: nil when
// the state this node applied holds lun at epoch or a later one (epoch was
// committed), else an error wrapping replication.ErrEpochUnknown (an epoch
// nobody committed, or one this node has not applied yet: the owner
// retries its hello). The node wires it with Mirror.SetEpochCheck.
func (c *Coordinator) CheckEpoch(lun replication.LUNID, epoch uint64) error {
	_, l, ok := c.fsm.LUNByID(uint64(lun))
	if !ok {
		return fmt.Errorf("%w: no LUN with ID %d applied on this node", replication.ErrEpochUnknown, uint64(lun))
	}
	if l.Epoch < epoch {
		return fmt.Errorf("%w: LUN %d is at epoch %d here, not %d", replication.ErrEpochUnknown, l.LUN, l.Epoch, epoch)
	}
	return nil
}

// DropFromInSync removes node from lun's in-sync set in epoch, and returns
// once that is committed. Dropping a node that is not in sync commits
// nothing and returns nil; so does dropping the owner, which never leaves.
// The copy's recorded generation stays.
func (c *Coordinator) DropFromInSync(ctx context.Context, lun replication.LUNID, epoch uint64, node replication.NodeID) error {
	return c.setInSync(ctx, lun, epoch, node, false, replication.Generation{})
}

// MarkInSync adds node to lun's in-sync set in epoch and records gen (when
// not zero) as its copy's generation, in one lun.set_in_sync, and returns
// once that is committed. Marking a node that is in sync with its recorded
// generation commits no change and returns nil; a node outside the
// placement is refused (ErrInvalid).
func (c *Coordinator) MarkInSync(ctx context.Context, lun replication.LUNID, epoch uint64, node replication.NodeID, gen replication.Generation) error {
	return c.setInSync(ctx, lun, epoch, node, true, gen)
}

// RecordGenerations records the generations of lun's copies in gens and
// clears the LUN's FreshCopies in epoch, in one lun.set_generations, and
// returns once that is committed. Errors as for MarkInSync.
func (c *Coordinator) RecordGenerations(ctx context.Context, lun replication.LUNID, epoch uint64, gens map[replication.NodeID]replication.Generation) error {
	iqn, l, ok := c.fsm.LUNByID(uint64(lun))
	if !ok {
		return noLUN(lun)
	}
	p := LUNSetGenerations{IQN: iqn, LUN: l.LUN, ID: l.ID, Epoch: epoch, Generations: map[string]string{}}
	for n, g := range gens {
		p.Generations[string(n)] = g.String()
	}
	cmd, err := NewCommand(CmdLUNSetGens, p)
	if err != nil {
		return err
	}
	return proposalErr(c.apply(ctx, cmd))
}

func (c *Coordinator) setInSync(ctx context.Context, lun replication.LUNID, epoch uint64, node replication.NodeID, in bool, gen replication.Generation) error {
	iqn, l, ok := c.fsm.LUNByID(uint64(lun))
	if !ok {
		return noLUN(lun)
	}
	if !in && l.Epoch == epoch && l.Owner == string(node) {
		// The owner of an epoch never changes within it, so this holds at
		// the leader too; the state machine would refuse it (ErrInvalid).
		return nil
	}
	cmd, err := NewCommand(CmdLUNSetInSync, LUNSetInSync{
		IQN: iqn, LUN: l.LUN, ID: l.ID, Epoch: epoch, Node: string(node), InSync: in, Generation: gen.String(),
	})
	if err != nil {
		return err
	}
	return proposalErr(c.apply(ctx, cmd))
}

// Watch calls fn, from one goroutine, with the view of lun each time the
// view this node applied differs from the last one delivered (or, for the
// first call, from the view when Watch was called), in commit order.
// Several commits applied in quick succession may come as one call with
// the newest view. Nothing is delivered while the LUN does not exist.
// cancel stops the goroutine and waits for it: fn is never called after
// cancel returns. fn must not call cancel (it would wait for itself).
func (c *Coordinator) Watch(lun replication.LUNID, fn func(replication.View)) (cancel func()) {
	ch, unsubscribe := c.fsm.Subscribe()
	// Subscribed first, so a commit between here and the goroutine's first
	// read is not lost.
	var last replication.View
	if _, l, ok := c.fsm.LUNByID(uint64(lun)); ok {
		last = viewOf(l)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-ch:
			}
			_, l, ok := c.fsm.LUNByID(uint64(lun))
			if !ok {
				continue
			}
			v := viewOf(l)
			if sameView(v, last) {
				continue
			}
			select {
			case <-stop: // cancel won the race: deliver nothing more
				return
			default:
			}
			last = v
			fn(v.Clone())
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			unsubscribe()
		})
		<-done
	}
}

// ReportProgress records p, the progress of a resync of node's copy of lun
// run by the owner of epoch, through lun.set_progress. At most one report
// per ProgressInterval is proposed for a copy; the first report of a run
// (a new epoch or start time, or after a Done one), a complete one (every
// region done: the counts a copy marked in sync must show) and a Done one
// always are. A report left out returns nil. Errors as for MarkInSync.
func (c *Coordinator) ReportProgress(ctx context.Context, lun replication.LUNID, epoch uint64, node replication.NodeID, p replication.Progress) error {
	iqn, l, ok := c.fsm.LUNByID(uint64(lun))
	if !ok {
		return noLUN(lun)
	}
	key := progressKey{lun, node}
	now := c.now()
	c.mu.Lock()
	prev, had := c.reported[key]
	newRun := !had || prev.epoch != epoch || !prev.started.Equal(p.Started) || prev.done
	complete := p.RegionsTotal > 0 && p.RegionsDone >= p.RegionsTotal
	if !newRun && !p.Done && !complete && now.Sub(prev.at) < ProgressInterval-progressSlack {
		c.mu.Unlock()
		if l.Epoch > epoch {
			return fmt.Errorf("%w: LUN %d on %s is at epoch %d, not %d", replication.ErrStaleView, l.LUN, iqn, l.Epoch, epoch)
		}
		return nil
	}
	// Taken now, so a concurrent report of the same copy is left out
	// rather than proposed twice; given back if the proposal fails.
	c.reported[key] = progressMark{epoch: epoch, started: p.Started, done: p.Done, at: now}
	c.mu.Unlock()

	cmd, err := NewCommand(CmdLUNSetProgress, progressPayload(iqn, l, epoch, node, p))
	if err == nil {
		err = proposalErr(c.apply(ctx, cmd))
	}
	c.mu.Lock()
	switch {
	case err != nil && had:
		c.reported[key] = prev
	case err != nil, p.Done:
		// A run that ended needs no mark: the next report starts a new
		// one either way, and the map does not keep copies long gone.
		delete(c.reported, key)
	}
	c.mu.Unlock()
	return err
}

// progressPayload turns p into a command payload, with numbers the state
// machine accepts: no negative counts, done at most total, a finite rate.
func progressPayload(iqn string, l *LUN, epoch uint64, node replication.NodeID, p replication.Progress) LUNSetProgress {
	pos := func(v int64) int64 { return max(v, 0) }
	out := LUNSetProgress{
		IQN: iqn, LUN: l.LUN, ID: l.ID, Epoch: epoch, Node: string(node),
		RegionsTotal: pos(p.RegionsTotal), RegionsDone: pos(p.RegionsDone), BytesCopied: pos(p.BytesCopied),
		ETAMillis: pos(p.ETA.Milliseconds()), Done: p.Done,
	}
	out.RegionsTotal = max(out.RegionsTotal, out.RegionsDone)
	if p.Rate > 0 && !math.IsInf(p.Rate, 0) {
		out.RateBps = p.Rate
	}
	return out
}
