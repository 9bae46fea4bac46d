package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// Preparer is what a node does, on the leader's request, before a new LUN
// with a copy on it is committed: create or open the copy's backing store
// (then close it), so that a LUN that a node of its placement cannot hold
// is refused, with that node's reason, instead of being committed and
// failing in its reconciler. The agent implements it over the same
// functions its reconciler uses.
//
// PrepareLUN must leave nothing behind when it fails. AbandonLUN undoes a
// PrepareLUN that succeeded when the LUN is not created after all: it
// removes the file PrepareLUN created for l (never a file that existed
// before). Both may be called concurrently, for different LUNs.
type Preparer interface {
	PrepareLUN(ctx context.Context, l DesiredLUN) error
	AbandonLUN(ctx context.Context, l DesiredLUN) error
}

// ErrBacking is the refusal of a LUN create that a node of its placement
// cannot carry out; its message names each failing node and its reason.
var ErrBacking = &Error{Code: "backing_failed", Message: "a node cannot create the LUN's backing store"}

// PrepareRequest is the body of POST /v1/internal/prepare and
// /v1/internal/abandon: the LUN as the leader is about to propose it (ID,
// placement and owner chosen).
type PrepareRequest struct {
	LUN LUN `json:"lun"`
}

// createLUN runs a lun.create on the leader: it checks the request (what
// the state machine would refuse, and the stricter rules of checkNewLUN),
// places the LUN, gives it its ID, has every node of the placement prepare
// its copy, and only then proposes it. If a node cannot prepare its copy,
// or the proposal fails, the copies prepared are abandoned: a create that
// fails leaves neither a LUN in the state nor a file on a node.
//
// Creates are serialized on the leader, and each starts with a Raft
// barrier (every committed entry applied here), so that the ID taken from
// the state (the last ID plus one) is still free when the entry commits.
func (n *Node) createLUN(ctx context.Context, cmd Command) (uint64, error) {
	var p LUNCreate
	if err := decodePayload(cmd, &p); err != nil {
		return 0, err
	}
	n.createMu.Lock()
	defer n.createMu.Unlock()
	// A new leader may not have applied every committed entry yet: wait
	// until it has, so that the checks and the ID see the whole state.
	if err := raftErr(n.raft.Barrier(timeLeft(ctx)).Error()); err != nil {
		return 0, err
	}
	st := n.fsm.State()
	l := &p.LUN
	if err := st.completeNewLUN(l); err != nil {
		return 0, err
	}
	cmd, err := NewCommand(CmdLUNCreate, p)
	if err != nil {
		return 0, err
	}
	// Everything the state machine checks, on a copy of the state: a
	// create it would refuse prepares nothing.
	if err := st.Clone().dryRun(cmd); err != nil {
		return 0, err
	}
	if err := n.prepareCopies(ctx, st, l); err != nil {
		return 0, err
	}
	idx, err := n.applyRaft(ctx, cmd)
	if err != nil {
		// Not created (or, after a lost leadership, maybe created: its
		// nodes then create the files again when they reconcile).
		n.abandonCopies(st, l, l.Placement)
	}
	return idx, err
}

// dryRun applies cmd to s (which it changes: pass a copy) and returns the
// state machine's refusal, if any.
func (s *State) dryRun(cmd Command) error {
	f := &FSM{state: s}
	return f.applyLocked(cmd)
}

// prepareCopies asks every node of l's placement, at once, to prepare its
// copy. If any fails, the others' are abandoned and the error names each
// failing node with its reason.
func (n *Node) prepareCopies(ctx context.Context, st *State, l *LUN) error {
	errs := make([]error, len(l.Placement))
	var wg sync.WaitGroup
	for i, id := range l.Placement {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.prepareOn(ctx, st, id, l)
		}()
	}
	wg.Wait()
	var failed, ok []string
	var msgs []string
	for i, id := range l.Placement {
		if errs[i] != nil {
			failed = append(failed, id)
			msgs = append(msgs, fmt.Sprintf("on %s: %v", id, errs[i]))
		} else {
			ok = append(ok, id)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	n.abandonCopies(st, l, ok)
	n.log.Warn("LUN create refused: a node cannot prepare its copy", "target", l.Target, "lun", l.LUN, "nodes", failed)
	return errf(ErrBacking, "LUN %d of %s not created: %s. Nothing was created on any node; fix that and run the create again, or place the LUN on other nodes (--placement)",
		l.LUN, l.Target, strings.Join(msgs, "; "))
}

// prepareOn has node id prepare its copy of l: this node directly, another
// through its admin API.
func (n *Node) prepareOn(ctx context.Context, st *State, id string, l *LUN) error {
	if id == n.cfg.NodeID {
		return n.prepareHere(ctx, l)
	}
	ni := st.Nodes[id]
	if ni == nil || ni.APIAddr == "" {
		return fmt.Errorf("node %s has no admin API address in the state", id)
	}
	err := NewClient(ni.APIAddr, n.cfg.Token, n.hc).PrepareLUN(ctx, l)
	var e *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return e
	case errors.Is(err, errNoEndpoint):
		// A node of an older version: it creates the file when it
		// reconciles, and status shows if it cannot.
		n.log.Info("node cannot prepare a LUN copy (older version): not checked before the create", "node", id)
		return nil
	}
	return fmt.Errorf("no answer from its admin API at %s (%v): is hatgt running there? A LUN is created only once every node of its placement has its copy ready", ni.APIAddr, err)
}

// abandonCopies asks the nodes ids to abandon their prepared copies of l,
// best effort (a file left behind is logged by the node that keeps it).
func (n *Node) abandonCopies(st *State, l *LUN, ids []string) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if id == n.cfg.NodeID {
				err = n.abandonHere(ctx, l)
			} else if ni := st.Nodes[id]; ni != nil && ni.APIAddr != "" {
				err = NewClient(ni.APIAddr, n.cfg.Token, n.hc).AbandonLUN(ctx, l)
				if errors.Is(err, errNoEndpoint) {
					err = nil
				}
			}
			if err != nil {
				n.log.Warn("abandoning a prepared LUN copy failed: its backing file may be left behind", "node", id,
					"target", l.Target, "lun", l.LUN, "lun_id", l.ID, "error", err)
			}
		}()
	}
	wg.Wait()
}

// prepareHere runs this node's Preparer for its copy of l (nothing
// without one).
func (n *Node) prepareHere(ctx context.Context, l *LUN) error {
	if n.cfg.Preparer == nil {
		return nil
	}
	return n.cfg.Preparer.PrepareLUN(ctx, DesiredLUNFor(l, n.cfg.NodeID, n.cfg.DataDir))
}

func (n *Node) abandonHere(ctx context.Context, l *LUN) error {
	if n.cfg.Preparer == nil {
		return nil
	}
	return n.cfg.Preparer.AbandonLUN(ctx, DesiredLUNFor(l, n.cfg.NodeID, n.cfg.DataDir))
}

// checkPrepareRequest checks that a prepare request names a LUN with a
// copy on this node, under a valid ID.
func (n *Node) checkPrepareRequest(q *PrepareRequest) error {
	l := &q.LUN
	if l.ID == 0 {
		return errf(ErrInvalid, "prepare: the LUN has no ID")
	}
	for _, id := range l.Placement {
		if id == n.cfg.NodeID {
			return checkNewLUN(l)
		}
	}
	return errf(ErrInvalid, "prepare: node %s holds no copy of LUN %d of %s", n.cfg.NodeID, l.LUN, l.Target)
}

func (a *API) prepareLUN(r *http.Request) (any, error) {
	var q PrepareRequest
	if err := decodeBody(r, &q); err != nil {
		return nil, err
	}
	if err := a.node.checkPrepareRequest(&q); err != nil {
		return nil, err
	}
	if err := a.node.prepareHere(r.Context(), &q.LUN); err != nil {
		return nil, errf(ErrBacking, "%v", err)
	}
	return nil, nil
}

func (a *API) abandonLUN(r *http.Request) (any, error) {
	var q PrepareRequest
	if err := decodeBody(r, &q); err != nil {
		return nil, err
	}
	if err := a.node.checkPrepareRequest(&q); err != nil {
		return nil, err
	}
	return nil, a.node.abandonHere(r.Context(), &q.LUN)
}

// PrepareLUN asks the node to prepare its copy of l (the leader does,
// before it proposes a new LUN).
func (c *Client) PrepareLUN(ctx context.Context, l *LUN) error {
	return c.do(ctx, http.MethodPost, "/v1/internal/prepare", PrepareRequest{LUN: *l}, nil)
}

// AbandonLUN asks the node to undo its PrepareLUN of l.
func (c *Client) AbandonLUN(ctx context.Context, l *LUN) error {
	return c.do(ctx, http.MethodPost, "/v1/internal/abandon", PrepareRequest{LUN: *l}, nil)
}

// completeNewLUN checks a LUN about to be created against st and fills in
// what the leader decides: its target's stored name, replicas, placement
// (State.Place) and owner, that its copies are fresh, and its ID.
func (st *State) completeNewLUN(l *LUN) error {
	l.Target = st.resolveIQN(l.Target)
	if _, ok := st.Targets[l.Target]; !ok {
		return errf(ErrUnknownTarget, "no target %s: create it first (hatgt target create %s)", l.Target, l.Target)
	}
	if err := checkNewLUN(l); err != nil {
		return err
	}
	if l.Replicas == 0 {
		l.Replicas = max(1, len(l.Placement))
	}
	if err := checkReplicas(st, l); err != nil {
		return err
	}
	// A replicated LUN's copies are fresh: blank, their generations for
	// the first owner to record. The state machine takes the flag from
	// the command, so replaying a log written before identities never
	// marks an old LUN's copies fresh.
	l.FreshCopies = l.Replicas > 1
	if len(l.Placement) == 0 {
		pl, err := st.Place(l.Replicas)
		if err != nil {
			return errf(ErrNotEnoughNodes, "%v: bring the dead nodes back, or ask for fewer --replicas", err)
		}
		l.Placement = pl
	}
	if l.Owner == "" {
		l.Owner = l.Placement[0]
	}
	if err := checkPathFree(st, l); err != nil {
		return err
	}
	l.ID = st.LastLUNID + 1
	return nil
}
