package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hatgt/hatgt/agent"
	"github.com/hatgt/hatgt/cluster"
)

// done prints the one line that says what a successful change did.
func (c *clusterCLI) done(format string, args ...any) {
	fmt.Fprintf(c.out, format+"\n", args...)
}

// nodeName is "node ID" of the node the CLI talks to, or "the node at
// ADDR" when it does not say (a short ping: only for messages).
func (c *clusterCLI) nodeName(cl *cluster.Client) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if id, err := cl.Ping(ctx); err == nil && id != "" {
		return "node " + id
	}
	return "the node at " + cl.Addr()
}

// join asks the node to join the cluster of peer. The node contacts peer
// itself, so a request that takes the node longer than --timeout is
// almost always a peer that does not answer: when the node still answers a
// ping, the error blames the peer, not the node.
func (c *clusterCLI) join(ctx context.Context, cl *cluster.Client, peer string) error {
	err := cl.Join(ctx, peer)
	var te *cluster.TransportError
	if !errors.As(err, &te) || !te.Sent || !te.Timeout() {
		return err
	}
	pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	id, perr := cl.Ping(pctx)
	if perr != nil {
		return err // the node itself stopped answering
	}
	return fmt.Errorf("node %s (at %s) did not finish joining through %s within --timeout %s: %s's admin API does not answer it (is %s up, is it a member's admin API address, port %d by default, and can node %s reach it?); the node gave up the join with this command",
		id, cl.Addr(), peer, c.timeout, peer, peer, defaultAPIPort, id)
}

// lunCreated prints what "lun create" made: size, copies, and where the
// LUN is served (its owner's portal, with a URL libiscsi tools and QEMU
// take), from the node's status once it has applied the new LUN and, for
// a replicated one, once its owner claimed the LUN's first epoch of its
// own (epoch 2; the owner opens the LUN as it applies it): so a qemu-img
// run right after finds it served instead of "NOT READY, state
// transition".
func (c *clusterCLI) lunCreated(ctx context.Context, cl *cluster.Client, iqn string, lun uint64) {
	var l *cluster.LUN
	var st cluster.Status
	ready := func(l *cluster.LUN) bool { return l != nil && (len(l.Placement) < 2 || l.Epoch > 1) }
	for try := 0; !ready(l) && try < 100; try++ { // at most about 10 s
		if try > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		var err error
		if st, err = cl.Status(ctx); err != nil {
			break
		}
		l = statusLUN(st, iqn, lun)
	}
	if l == nil {
		c.done("created LUN %d of %s (hatgt lun list %s shows where it is served)", lun, iqn, iqn)
		return
	}
	copies := "1 copy"
	if len(l.Placement) > 1 {
		copies = fmt.Sprintf("%d copies on %s", len(l.Placement), strings.Join(l.Placement, ","))
	}
	portal := ""
	for _, n := range st.Nodes {
		if n.ID == l.Owner {
			portal = n.ISCSIPortal
		}
	}
	if portal == "" {
		c.done("created LUN %d of %s: %s, %s, owner %s", lun, l.Target, agent.FormatBytes(int64(l.Size)), copies, l.Owner)
		return
	}
	opening := ""
	if !ready(l) {
		opening = " (once its owner opened it: hatgt status shows its epoch past 1)"
	}
	c.done("created LUN %d of %s: %s, %s, served by %s at iscsi://%s/%s/%d%s", lun, l.Target, agent.FormatBytes(int64(l.Size)), copies, l.Owner,
		connectAddr(portal), l.Target, lun, opening)
}

// statusLUN returns LUN lun of target iqn (any case) in st, or nil.
func statusLUN(st cluster.Status, iqn string, lun uint64) *cluster.LUN {
	for _, t := range st.Targets {
		if !strings.EqualFold(t.IQN, iqn) {
			continue
		}
		for i := range t.LUNs {
			if t.LUNs[i].LUN.LUN == lun {
				return &t.LUNs[i].LUN
			}
		}
	}
	return nil
}
