package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// startGossip creates the memberlist agent. Its node name is the node ID and
// its metadata the JSON of the node's addresses.
func (n *Node) startGossip(tr memberlist.Transport) error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.cfg.NodeID
	host, port, err := net.SplitHostPort(n.cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("cluster: gossip address: %w", err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("cluster: gossip port: %w", err)
	}
	mc.BindAddr, mc.BindPort = host, p
	mc.AdvertiseAddr, mc.AdvertisePort = "", 0
	if tr != nil {
		mc.Transport = tr
	}
	if len(n.cfg.GossipKey) > 0 {
		mc.SecretKey = n.cfg.GossipKey
	}
	mc.ProbeInterval = n.cfg.GossipProbeInterval
	mc.ProbeTimeout = n.cfg.GossipProbeTimeout
	mc.SuspicionMult = n.cfg.GossipSuspicionMult
	mc.GossipInterval = n.cfg.GossipProbeInterval / 5
	mc.PushPullInterval = 10 * n.cfg.GossipProbeInterval
	mc.TCPTimeout = 2 * n.cfg.GossipProbeInterval
	mc.Delegate = gossipDelegate{n}
	mc.Events = gossipEvents{n}
	mc.Ping = gossipPing{n}
	mc.Logger = nil
	mc.LogOutput = n.log.Named("memberlist").StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true, InferLevelsWithTimestamp: true})
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: start memberlist: %w", err)
	}
	n.ml = ml
	return nil
}

type gossipDelegate struct{ n *Node }

func (d gossipDelegate) NodeMeta(limit int) []byte {
	// Built from the config, not Info: memberlist knows the gossip address,
	// and NodeMeta must not call back into memberlist.
	c := d.n.cfg
	info := NodeInfo{ID: c.NodeID, APIAddr: c.APIAddr, ISCSIPortal: c.ISCSIPortal,
		RaftAddr: string(d.n.trans.LocalAddr()), ReplicationAddr: c.ReplicationAddr}
	b, _ := json.Marshal(info)
	if len(b) > limit {
		return nil
	}
	return b
}
func (gossipDelegate) NotifyMsg([]byte)                           {}
func (gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (gossipDelegate) LocalState(join bool) []byte                { return nil }
func (gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

type gossipEvents struct{ n *Node }

func (e gossipEvents) NotifyJoin(m *memberlist.Node) {
	e.n.log.Debug("gossip: node joined", "peer", m.Name)
	e.n.mu.Lock()
	delete(e.n.gone, m.Name)
	e.n.mu.Unlock()
	e.n.kickHealth()
}

// NotifyLeave remembers the verdict: memberlist's member list leaves out
// dead and departed nodes, so without it a node that fails soon after
// this one started would be recorded only after the start-up grace.
func (e gossipEvents) NotifyLeave(m *memberlist.Node) {
	e.n.log.Info("gossip: node left or failed", "peer", m.Name)
	h := HealthDead
	if m.State == memberlist.StateLeft {
		h = HealthLeft
	}
	e.n.mu.Lock()
	e.n.gone[m.Name] = h
	e.n.mu.Unlock()
	e.n.kickHealth()
}
func (e gossipEvents) NotifyUpdate(m *memberlist.Node) { e.n.kickHealth() }

type gossipPing struct{ n *Node }

func (gossipPing) AckPayload() []byte { return nil }
func (p gossipPing) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	p.n.mu.Lock()
	p.n.lastSeen[other.Name] = time.Now()
	p.n.mu.Unlock()
}

func (n *Node) kickHealth() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// gossipAlive returns which nodes memberlist sees alive (self included).
func (n *Node) gossipAlive() map[string]bool {
	alive := map[string]bool{n.cfg.NodeID: true}
	if n.ml == nil {
		return alive
	}
	for _, m := range n.ml.Members() {
		if m.State == memberlist.StateAlive {
			alive[m.Name] = true
		}
	}
	return alive
}

// gossipMeta returns the addresses a node publishes in memberlist.
func (n *Node) gossipMeta(id string) (NodeInfo, bool) {
	if n.ml == nil {
		return NodeInfo{}, false
	}
	for _, m := range n.ml.Members() {
		if m.Name != id {
			continue
		}
		var info NodeInfo
		if json.Unmarshal(m.Meta, &info) != nil {
			return NodeInfo{}, false
		}
		info.GossipAddr = net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
		return info, true
	}
	return NodeInfo{}, false
}

// gossipHealth maps memberlist's view of each member to a recorded health:
// its member list, and the nodes it reported dead or departed since.
func (n *Node) gossipHealth() map[string]string {
	h := map[string]string{n.cfg.NodeID: HealthAlive}
	n.mu.Lock()
	for id, g := range n.gone {
		h[id] = g
	}
	n.mu.Unlock()
	for _, m := range n.ml.Members() {
		switch m.State {
		case memberlist.StateAlive, memberlist.StateSuspect:
			h[m.Name] = HealthAlive
		case memberlist.StateLeft:
			h[m.Name] = HealthLeft
		default:
			h[m.Name] = HealthDead
		}
	}
	return h
}

// healthLoop runs on every node; on the leader it records in the state
// machine what memberlist sees: it registers itself, and proposes a health
// change for each node whose recorded health differs. It is level
// triggered (memberlist events, leadership, and a periodic tick), so a
// missed event or a new leader converges all the same.
func (n *Node) healthLoop(ctx context.Context) {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.GossipProbeInterval * 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		case <-tick.C:
		}
		if !n.IsLeader() {
			n.refreshSelf(ctx)
			continue
		}
		if err := n.syncHealth(ctx); err != nil {
			n.log.Debug("health sync", "error", err)
		}
	}
}

func (n *Node) syncHealth(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	st := n.fsm.State()
	self := n.Info()
	if cur, ok := st.Nodes[self.ID]; !ok || !sameAddrs(*cur, self) || cur.Health != HealthAlive {
		cmd, _ := NewCommand(CmdNodeRegister, NodeRegister{Node: self})
		if _, err := n.execute(ctx, &Op{Kind: OpCommand, Command: &cmd}); err != nil {
			return err
		}
	}
	seen := n.gossipHealth()
	// Nodes absent from memberlist count as dead once gossip had time to
	// find them.
	grace := time.Since(n.started) > n.cfg.GossipProbeInterval*time.Duration(4*n.cfg.GossipSuspicionMult)
	for _, ni := range st.SortedNodes() {
		if ni.ID == self.ID {
			continue
		}
		h, ok := seen[ni.ID]
		if !ok {
			if !grace {
				continue
			}
			h = HealthDead
		}
		if h == ni.Health || (ni.Health == HealthLeft && h == HealthDead) {
			continue
		}
		n.log.Info("recording node health", "peer", ni.ID, "health", h)
		cmd, _ := NewCommand(CmdNodeHealth, NodeHealth{ID: ni.ID, Health: h})
		if _, err := n.execute(ctx, &Op{Kind: OpCommand, Command: &cmd}); err != nil {
			return err
		}
	}
	return nil
}

// refreshSelf re-registers this (follower) node through the leader when
// its recorded addresses differ from its configuration, as after a restart
// with new addresses.
func (n *Node) refreshSelf(ctx context.Context) {
	self := n.Info()
	n.fsm.mu.RLock()
	cur, ok := n.fsm.state.Nodes[self.ID]
	same := ok && sameAddrs(*cur, self)
	n.fsm.mu.RUnlock()
	if !ok || same {
		return // not a member (yet), or nothing to do
	}
	cmd, _ := NewCommand(CmdNodeRegister, NodeRegister{Node: self})
	if _, err := n.Apply(ctx, cmd); err != nil {
		n.log.Debug("re-register", "error", err)
	}
}

// sameAddrs compares what a node says of itself: its ID and addresses,
// not what the state machine records of it (health, portal group tag).
func sameAddrs(a, b NodeInfo) bool {
	a.Health, b.Health = "", ""
	a.Tag, b.Tag = 0, 0
	return a == b
}

// rejoinGossip joins memberlist through the gossip addresses of the
// members the state machine knows that memberlist does not see alive:
// after a restart (alone in memberlist), and after a partition healed.
// memberlist forgets the members it declared dead, and two groups that
// each still see a member of their own (a five-node cluster split two
// against three) never probe each other again by themselves. A node that
// is really down costs a failed join now and then (every few probe
// intervals, in the background of this loop).
func (n *Node) rejoinGossip(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.GossipProbeInterval)
	defer t.Stop()
	for tick := 0; ; tick++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		alone := n.ml.NumMembers() <= 1
		if !alone && tick%5 != 0 {
			continue
		}
		alive := n.gossipAlive()
		var addrs []string
		for _, ni := range n.fsm.State().SortedNodes() {
			if ni.ID != n.cfg.NodeID && ni.GossipAddr != "" && ni.Health != HealthLeft && (alone || !alive[ni.ID]) {
				addrs = append(addrs, ni.GossipAddr)
			}
		}
		if len(addrs) > 0 {
			if _, err := n.ml.Join(addrs); err != nil {
				n.log.Debug("gossip rejoin", "error", err)
			}
		}
	}
}
