package cluster

import (
	"context"
	"errors"
)

// forward sends op to the leader's API. Answers that another try may cure
// (the leader stepped down, or is unreachable) become errRetry; the
// caller retries until its deadline.
func (n *Node) forward(ctx context.Context, leaderAPI string, op *Op) (uint64, error) {
	c := NewClient(leaderAPI, n.cfg.Token, n.hc)
	res, err := c.Forward(ctx, op)
	if err == nil {
		return res.Index, nil
	}
	var e *Error
	if errors.As(err, &e) {
		if e.Is(ErrNotLeader) || e.Is(ErrNoLeader) || e.Is(ErrShutdown) {
			return 0, errRetry
		}
		if e.Is(ErrUnauthorized) {
			return 0, errf(ErrUnauthorized, "the leader at %s refused this node's admin token: every node needs the same token", leaderAPI)
		}
		return 0, e
	}
	n.log.Debug("forward to leader failed", "leader_api", leaderAPI, "error", err)
	return 0, errRetry
}
