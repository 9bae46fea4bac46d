package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// JoinResult is the answer to a join: the gossip addresses of the members,
// to join memberlist through.
type JoinResult struct {
	Index       uint64   `json:"index"`
	GossipAddrs []string `json:"gossip_addrs"`
}

// AddNode adds node as a Raft voter and registers its addresses (run on any
// member; it is forwarded to the leader). It is what a joining node asks a
// member to do.
func (n *Node) AddNode(ctx context.Context, node NodeInfo) (JoinResult, error) {
	idx, err := n.submit(ctx, &Op{Kind: OpJoin, Node: &node})
	if err != nil {
		return JoinResult{}, err
	}
	res := JoinResult{Index: idx}
	for _, ni := range n.fsm.State().SortedNodes() {
		if ni.ID != node.ID && ni.GossipAddr != "" {
			res.GossipAddrs = append(res.GossipAddrs, ni.GossipAddr)
		}
	}
	if len(res.GossipAddrs) == 0 {
		res.GossipAddrs = []string{n.gossipAddr()}
	}
	return res, nil
}

// JoinVia makes this node join the cluster that the member at peerAPI
// belongs to. It joins gossip first, through the members' gossip addresses
// in the peer's status, so that a node that cannot gossip with the cluster
// (a different gossip key, a firewall) is refused before it becomes a Raft
// voter; then the member adds it as a voter through the leader.
//
// Errors name the peer. A peer that refuses this node's admin token gives
// an *Error matching ErrUnauthorized: that never cures itself, so the
// caller should stop retrying.
func (n *Node) JoinVia(ctx context.Context, peerAPI string) error {
	c := NewClient(peerAPI, n.cfg.Token, n.hc)
	st, err := c.Status(ctx)
	if err != nil {
		return joinPeerError(peerAPI, err)
	}
	var addrs []string
	for _, ns := range st.Nodes {
		if ns.ID != n.cfg.NodeID && ns.GossipAddr != "" && ns.Health != HealthLeft {
			addrs = append(addrs, ns.GossipAddr)
		}
	}
	if err := n.JoinGossip(addrs); err != nil {
		return fmt.Errorf("%w (is the gossip key the same on every node?)", err)
	}
	res, err := c.AddNode(ctx, n.Info())
	if err != nil {
		return joinPeerError(peerAPI, err)
	}
	return n.JoinGossip(res.GossipAddrs)
}

// joinPeerError says what went wrong asking the member at peer to let
// this node join, and what to check.
func joinPeerError(peer string, err error) error {
	var te *TransportError
	switch {
	case errors.As(err, &te) && te.Sent:
		return fmt.Errorf("the member at %s took the join request but did not answer: %v (is it a hatgt node's admin API address, port 3270 by default?)", peer, te.Err)
	case errors.As(err, &te):
		return fmt.Errorf("cannot reach the member at %s to join its cluster: %v (is it up, and is %s its admin API address, port 3270 by default?)", peer, te.Err, peer)
	case errors.Is(err, ErrUnauthorized):
		return errf(ErrUnauthorized, "the cluster at %s refused this node's admin token: a joining node needs the cluster's token (HATGT_TOKEN or --token-file, the same on every node)", peer)
	}
	var e *Error
	if errors.As(err, &e) {
		return errf(&Error{Code: e.Code}, "the member at %s refused the join: %s", peer, e.Message)
	}
	return fmt.Errorf("joining through %s: %w", peer, err)
}

// JoinGossip joins memberlist through the given gossip addresses.
func (n *Node) JoinGossip(addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	if _, err := n.ml.Join(addrs); err != nil {
		// memberlist lists one error per address over several lines.
		return fmt.Errorf("cluster: join gossip: %s", strings.Join(strings.Fields(err.Error()), " "))
	}
	return nil
}

// RemoveNode removes a (dead) node from Raft and the state machine. Its
// LUN copies are dropped; LUNs it owned move to an in-sync copy, but only
// once its owner lease has run out (remove.go): until then the call waits,
// or fails with ErrOwnerLease saying when to retry.
func (n *Node) RemoveNode(ctx context.Context, id string) error {
	if id == n.cfg.NodeID {
		return errf(ErrInvalid, "a node cannot remove itself; use leave")
	}
	_, err := n.submit(ctx, &Op{Kind: OpRemove, NodeID: id})
	return err
}
