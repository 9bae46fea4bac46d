package agent

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// copyOutcome is what the reconciler found of one LUN copy placed on this
// node: its service (cluster.ServiceServing, ...), the error that made it
// fail, and since when each holds (this node's clock).
type copyOutcome struct {
	service string
	err     string
	since   time.Time // service unchanged since
	errAt   time.Time // err unchanged since
}

// note records the outcome of LUN l in this Reconcile: failed with err, or
// service. A LUN without an ID (created before IDs existed) cannot be
// reported.
func (r *reconciler) note(l cluster.DesiredLUN, service string, err error) {
	if l.ID == 0 || r.outcomes == nil {
		return
	}
	o := copyOutcome{service: service}
	if err != nil {
		o.service, o.err = cluster.ServiceFailed, reportText(err.Error())
	}
	r.outcomes[l.ID] = o
}

// reportText fits an error into a report: valid UTF-8, at most
// cluster.MaxReportError bytes.
func reportText(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= cluster.MaxReportError {
		return s
	}
	cut := cluster.MaxReportError - len("...")
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// replicatedService is the service of replicated LUN l on this node after
// reconcileReplicated: the owner serves it once its volume serves; a
// copy that is not the owner's stands by.
func replicatedService(rt *runTarget, l cluster.DesiredLUN) string {
	if !l.Owned {
		return cluster.ServiceStandby
	}
	if rl := rt.luns[l.LUN.LUN]; rl != nil && rl.sw != nil {
		if v := rl.sw.volume(); v != nil && v.Serving() == nil {
			return cluster.ServiceServing
		}
	}
	return cluster.ServiceStarting
}

// Reporter timing.
const (
	// reportInterval is the least time between two reports of a node.
	reportInterval = time.Second
	// errorTextInterval is the least time between two reports of a copy
	// that still fails, with another error text only.
	errorTextInterval = 30 * time.Second
	// reportRetry is how often the reporter looks again without news (a
	// report that could not be committed, a state that lagged).
	reportRetry = 5 * time.Second
)

// reporter tells the cluster, through copy.report entries, whether this
// node serves each LUN copy placed on it and the last error it met. It
// compares what the reconciler found with what the state holds of this
// node and reports only what differs — on a change, at most one report per
// reportInterval, and a mere change of error text at most every
// errorTextInterval — so a copy that fails the same way at every retry
// writes nothing to the Raft log. A record from before this process
// started differs too (its Since is the previous run's): each copy is
// reported once after a restart, until the state holds this run's. A node
// that is down reports nothing; status shows its copies offline from its
// health.
type reporter struct {
	log    *slog.Logger
	nodeID string
	now    func() time.Time
	state  func() *cluster.State // nil until the node runs
	apply  func(ctx context.Context, cmd cluster.Command) error

	kick     chan struct{}
	retry    time.Duration // reportRetry; tests shorten it
	interval time.Duration // reportInterval; tests shorten it
	// oldLeaderWait is how long to wait after a leader refused copy.report
	// as an unknown command.
	oldLeaderWait time.Duration

	// started is when this process's reporter began: a record of an
	// older Since is its previous run's.
	started time.Time

	mu       sync.Mutex
	latest   map[uint64]copyOutcome // from the last Reconcile
	textSent map[uint64]time.Time   // when a copy's error text was last reported
}

func newReporter(log *slog.Logger, nodeID string, state func() *cluster.State,
	apply func(context.Context, cluster.Command) error) *reporter {
	return &reporter{log: log, nodeID: nodeID, now: time.Now, started: time.Now(), state: state, apply: apply,
		kick: make(chan struct{}, 1), retry: reportRetry, interval: reportInterval, oldLeaderWait: time.Minute, textSent: map[uint64]time.Time{}}
}

// observe takes the outcomes of one Reconcile (every copy placed here),
// keeping for each since when its service and error hold, and wakes run.
// It does not block.
func (p *reporter) observe(out map[uint64]copyOutcome) {
	now := p.now()
	p.mu.Lock()
	next := make(map[uint64]copyOutcome, len(out))
	for id, o := range out {
		prev, seen := p.latest[id]
		o.since, o.errAt = now, now
		if seen && prev.service == o.service {
			o.since = prev.since
		}
		if seen && prev.err == o.err {
			o.errAt = prev.errAt
		}
		next[id] = o
	}
	p.latest = next
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run reports until ctx ends.
func (p *reporter) run(ctx context.Context) {
	tick := time.NewTicker(p.retry)
	defer tick.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-tick.C:
		}
		if wait := p.interval - time.Since(last); !last.IsZero() && wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		var st *cluster.State
		if p.state != nil {
			st = p.state()
		}
		rep := p.pending(st)
		if rep == nil {
			continue
		}
		last = time.Now()
		cmd, err := cluster.NewCommand(cluster.CmdCopyReport, rep)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = p.apply(actx, cmd)
			cancel()
		}
		if errors.Is(err, cluster.ErrUnknownCommand) {
			// A leader of an older version (a rolling upgrade): each
			// try would be one more refused entry in the log.
			p.log.Info("the cluster leader does not take copy reports (an older version?): status will not show this node's copies until it does; trying again in a minute")
			select {
			case <-ctx.Done():
				return
			case <-time.After(p.oldLeaderWait):
			}
			continue
		}
		if err != nil {
			p.log.Debug("reporting copies failed; retrying", "err", err)
			continue
		}
		p.sent(rep)
	}
}

// pending returns the report of what differs between the last outcomes
// and what st holds of this node's copies, or nil when nothing does. A
// record st holds of a LUN no longer placed here makes a report too (its
// application drops the record).
func (p *reporter) pending(st *cluster.State) *cluster.CopiesReport {
	if st == nil || st.Nodes[p.nodeID] == nil {
		return nil
	}
	placed := map[uint64]bool{}
	for _, t := range st.Targets {
		for _, l := range t.LUNs {
			if l.ID != 0 && slices.Contains(l.Placement, p.nodeID) {
				placed[l.ID] = true
			}
		}
	}
	recs := st.Reports[p.nodeID]
	rep := &cluster.CopiesReport{Node: p.nodeID}
	stale := false
	for id := range recs {
		stale = stale || !placed[id]
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, o := range p.latest {
		if !placed[id] {
			continue
		}
		cur := recs[id]
		e := cluster.LUNCopyReport{ID: id, CopyReport: cluster.CopyReport{Service: o.service, Since: o.since.UnixMilli()}}
		if cur != nil {
			e.LastError, e.LastErrorAt = cur.LastError, cur.LastErrorAt
		}
		if o.err != "" && (cur == nil || cur.LastError != o.err) {
			e.LastError, e.LastErrorAt = o.err, o.errAt.UnixMilli()
		}
		switch {
		case cur == nil || cur.Service != o.service:
		case cur.LastError != e.LastError:
			// Still failing, with another text: not at every retry.
			if t, ok := p.textSent[id]; ok && now.Sub(t) < errorTextInterval {
				continue
			}
			e.Since = cur.Since
		case cur.Since < p.started.UnixMilli():
			// The same service as before this process started (a
			// standby copy before and after a restart): it holds
			// since this start, not since the previous run's. The
			// state's own record ends it, whatever an apply answered.
		default:
			continue // the state holds it already
		}
		rep.Copies = append(rep.Copies, e)
	}
	if len(rep.Copies) == 0 && !stale {
		return nil
	}
	slices.SortFunc(rep.Copies, func(a, b cluster.LUNCopyReport) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return rep
}

// sent records when the error texts of rep were reported.
func (p *reporter) sent(rep *cluster.CopiesReport) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range rep.Copies {
		if e.LastError != "" {
			p.textSent[e.ID] = now
		}
	}
	for id := range p.textSent {
		if _, ok := p.latest[id]; !ok {
			delete(p.textSent, id)
		}
	}
	for _, e := range rep.Copies {
		p.log.Debug("reported copy", "lun_id", e.ID, "service", e.Service, "error", e.LastError)
	}
}
