package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// A leave hands the LUNs this node owns over to other copies (cluster's
// Node.Leave). Before it proposes the owner changes it calls stopServing
// (cluster.OwnerRelease): from then on no IO of those LUNs is served here,
// so the next owner never serves next to this one (invariant 5).

// errStopped says that a leave stopped this node serving the LUN: it
// opens no owner volume (and claims no epoch) for it until the leave
// fails and resumes it.
var errStopped = errors.New("a leave is handing the LUN over: not serving it as owner")

// errHandedOver is what IO on a LUN handed over by a leave answers (ALUA
// transitioning, like any deposed owner).
var errHandedOver = fmt.Errorf("%w: this node is leaving the cluster and hands the LUN over", replication.ErrNotOwner)

var _ cluster.OwnerRelease = (*replicaHost)(nil)

// StopServing deposes the owner volumes of the LUNs ids at once, keeps the
// reconciler from opening them again until ResumeServing, and returns once
// no command of their LUs is in flight any more: every later one finds the
// volume deposed and fails. LUNs without a copy here (not replicated) are
// only marked.
func (h *replicaHost) StopServing(ctx context.Context, ids []uint64) error {
	h.mu.Lock()
	if h.stopped == nil {
		h.stopped = map[uint64]bool{}
	}
	var cs []*replicaCopy
	for _, id := range ids {
		h.stopped[id] = true
		if c := h.copies[id]; c != nil {
			cs = append(cs, c)
		}
	}
	h.mu.Unlock()
	// The depose cuts the volumes' replication connections, so that
	// writes waiting on a mirror fail at once instead of at their ack
	// timeout; then every command that began before has finished.
	for _, c := range cs {
		if o := c.vol.Load(); o != nil {
			o.Depose(errHandedOver)
		}
	}
	for _, c := range cs {
		drained := make(chan struct{})
		go func() {
			c.io.Lock() // a barrier: every command in flight holds io.RLock
			c.io.Unlock()
			close(drained)
		}()
		select {
		case <-drained:
		case <-ctx.Done():
			return fmt.Errorf("commands of LUN ID %d still in flight: %w", c.id, ctx.Err())
		}
	}
	if len(cs) > 0 {
		h.log.Info("stopped serving LUNs for a leave", "luns", len(cs))
	}
	return nil
}

// ResumeServing lifts StopServing: the control loop sees the LUNs owned
// and not served, and the reconciler opens them again in a new epoch.
func (h *replicaHost) ResumeServing(ids []uint64) {
	h.mu.Lock()
	for _, id := range ids {
		delete(h.stopped, id)
	}
	h.mu.Unlock()
}

// isStopped reports whether a leave stopped this node serving LUN id.
func (h *replicaHost) isStopped(id uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopped[id]
}
