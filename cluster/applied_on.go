package cluster

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// A node that commits a change other nodes must act on before it answers
// (a PERSISTENT RESERVE OUT through a Standby port: the LUN's owner must
// enforce it before the initiator hears GOOD) asks the node that acts,
// through its admin API, to say when it applied the change's entry:
// GET /v1/internal/applied?index=N answers once the node applied entry N,
// or 503 when it has not within maxAppliedWait.

// maxAppliedWait bounds one GET /v1/internal/applied.
const maxAppliedWait = 2 * time.Second

// AppliedAnswer is the answer of GET /v1/internal/applied.
type AppliedAnswer struct {
	ID      string `json:"id"`
	Applied uint64 `json:"applied"`
}

func (a *API) applied(w http.ResponseWriter, r *http.Request) {
	idx, err := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	if err != nil {
		writeErr(w, errf(ErrInvalid, "index: want an entry index, got %q", r.URL.Query().Get("index")))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), maxAppliedWait)
	defer cancel()
	if err := a.node.fsm.WaitApplied(ctx, idx); err != nil {
		writeErr(w, errf(ErrShutdown, "entry %d not applied here within %v (applied %d)", idx, maxAppliedWait, a.node.fsm.AppliedIndex()))
		return
	}
	writeJSON(w, http.StatusOK, AppliedAnswer{ID: a.node.cfg.NodeID, Applied: a.node.fsm.AppliedIndex()})
}

// WaitApplied asks the node at the client's address to answer once it
// applied entry idx.
func (c *Client) WaitApplied(ctx context.Context, idx uint64) (AppliedAnswer, error) {
	var a AppliedAnswer
	err := c.do(ctx, http.MethodGet, "/v1/internal/applied?index="+strconv.FormatUint(idx, 10), nil, &a)
	return a, err
}

// WaitAppliedOn returns once node id says it applied entry idx (at once
// for this node, after its own apply). It fails when the node does not
// answer so within ctx, is not in the state, or another node answers at
// its address.
func (n *Node) WaitAppliedOn(ctx context.Context, id string, idx uint64) error {
	if id == n.cfg.NodeID {
		return n.fsm.WaitApplied(ctx, idx)
	}
	ni := n.fsm.State().Nodes[id]
	if ni == nil {
		return errf(ErrUnknownNode, "no node %q", id)
	}
	for {
		a, err := NewClient(ni.APIAddr, n.cfg.Token, n.hc).WaitApplied(ctx, idx)
		switch {
		case err == nil && a.ID != id:
			return fmt.Errorf("cluster: node %s answers at %s, not %s", a.ID, ni.APIAddr, id)
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("cluster: node %s has not said it applied entry %d: %w", id, idx, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: node %s has not said it applied entry %d: %w", id, idx, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
