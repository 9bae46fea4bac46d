package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// The harness runs several Nodes in one test process: Raft over
// raft.InmemTransport, memberlist over an in-memory packet/stream network,
// and the admin APIs on loopback HTTP servers whose clients dial through the
// same partition table. partition(a, b) cuts all three between two nodes.

const testToken = "tok-ADMIN-SECRET-123"

type testNet struct {
	mu      sync.Mutex
	gossip  map[string]*memTransport // by gossip address
	apiNode map[string]string        // API address -> node ID
	cut     map[[2]string]bool       // node ID pairs, both orders
	gport   int
}

func newTestNet() *testNet {
	return &testNet{gossip: map[string]*memTransport{}, apiNode: map[string]string{}, cut: map[[2]string]bool{}}
}

func (n *testNet) isCut(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut[[2]string{a, b}]
}

// memTransport is a memberlist.Transport over channels.
type memTransport struct {
	net      *testNet
	id, addr string
	packets  chan *memberlist.Packet
	streams  chan net.Conn
	done     chan struct{}
	once     sync.Once
}

func (n *testNet) newGossip(id string) *memTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.gport++
	t := &memTransport{net: n, id: id, addr: "127.0.0.1:" + strconv.Itoa(20000+n.gport),
		packets: make(chan *memberlist.Packet, 1024), streams: make(chan net.Conn, 16), done: make(chan struct{})}
	n.gossip[t.addr] = t
	return t
}

func (t *memTransport) peer(addr string) (*memTransport, bool) {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	d, ok := t.net.gossip[addr]
	if !ok || t.net.cut[[2]string{t.id, d.id}] {
		return nil, false
	}
	select {
	case <-d.done:
		return nil, false
	default:
	}
	return d, true
}

func (t *memTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	h, p, _ := net.SplitHostPort(t.addr)
	port, _ := strconv.Atoi(p)
	return net.ParseIP(h), port, nil
}

func (t *memTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	d, ok := t.peer(addr)
	if !ok {
		return now, nil // lost, like UDP
	}
	pkt := &memberlist.Packet{Buf: append([]byte(nil), b...), From: fakeAddr(t.addr), Timestamp: now}
	select {
	case d.packets <- pkt:
	default:
	}
	return now, nil
}

func (t *memTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *memTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d, ok := t.peer(addr)
	if !ok {
		return nil, fmt.Errorf("dial %s: unreachable", addr)
	}
	a, b := net.Pipe()
	select {
	case d.streams <- b:
		return a, nil
	case <-d.done:
	case <-time.After(timeout):
	}
	a.Close()
	b.Close()
	return nil, fmt.Errorf("dial %s: timeout", addr)
}

func (t *memTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *memTransport) Shutdown() error {
	t.once.Do(func() { close(t.done) })
	return nil
}

type fakeAddr string

func (a fakeAddr) Network() string { return "mem" }
func (a fakeAddr) String() string  { return string(a) }

// logSink collects every log line of a test cluster (to look for secrets)
// and passes it on to t.Log while the test runs.
type logSink struct {
	mu   sync.Mutex
	t    *testing.T
	buf  bytes.Buffer
	done bool
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	if !s.done && testing.Verbose() {
		s.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

type testNode struct {
	*Node
	id    string
	trans *raft.InmemTransport
	store *raft.InmemStore
	snaps raft.SnapshotStore
	gos   *memTransport
	srv   *http.Server
	ln    net.Listener
}

type testCluster struct {
	t     *testing.T
	net   *testNet
	logs  *logSink
	nodes map[string]*testNode
}

func testConfig(id string) Config {
	c := DefaultConfig()
	c.NodeID = id
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.GossipProbeInterval = 100 * time.Millisecond
	c.GossipProbeTimeout = 50 * time.Millisecond
	c.GossipSuspicionMult = 2
	c.ApplyTimeout = 3 * time.Second
	c.ReconcileInterval = time.Second
	c.Token = testToken
	return c
}

func newTestCluster(t *testing.T) *testCluster {
	c := &testCluster{t: t, net: newTestNet(), logs: &logSink{t: t}, nodes: map[string]*testNode{}}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.stop()
		}
		c.logs.mu.Lock()
		c.logs.done = true
		c.logs.mu.Unlock()
	})
	return c
}

// start starts node id; the first one bootstraps. mod may change its
// config. Stores are kept across stop/start of the same id.
func (c *testCluster) start(id string, bootstrap bool, mod func(*Config)) *testNode {
	c.t.Helper()
	tn := c.nodes[id]
	if tn == nil {
		tn = &testNode{id: id, store: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore()}
		c.nodes[id] = tn
	}
	_, tn.trans = raft.NewInmemTransport(raft.ServerAddress("raft-" + id + ":7000"))
	for _, o := range c.nodes {
		if o != tn && o.Node != nil && o.trans != nil {
			tn.trans.Connect(o.trans.LocalAddr(), o.trans)
			o.trans.Connect(tn.trans.LocalAddr(), tn.trans)
		}
	}
	tn.gos = c.net.newGossip(id)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	tn.ln = ln
	c.net.mu.Lock()
	c.net.apiNode[ln.Addr().String()] = id
	c.net.mu.Unlock()

	cfg := testConfig(id)
	cfg.DataDir = c.t.TempDir()
	cfg.RaftAddr = "127.0.0.1:1" // the in-memory transport's address is used
	cfg.GossipAddr = tn.gos.addr
	cfg.APIAddr = ln.Addr().String()
	cfg.ISCSIPortal = "127.0.0.1:3260"
	cfg.Bootstrap = bootstrap
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: id, Level: hclog.Debug, Output: c.logs})
	if mod != nil {
		mod(&cfg)
	}
	hc := &http.Client{Timeout: cfg.ApplyTimeout, Transport: &http.Transport{
		DisableKeepAlives: true, // every request dials, so a partition applies at once
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c.net.mu.Lock()
			to, ok := c.net.apiNode[addr]
			cut := c.net.cut[[2]string{id, to}]
			c.net.mu.Unlock()
			if !ok || cut {
				return nil, fmt.Errorf("dial %s: unreachable", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	n, err := NewNode(cfg, Deps{Transport: tn.trans, LogStore: tn.store, StableStore: tn.store,
		SnapshotStore: tn.snaps, GossipTransport: tn.gos, HTTPClient: hc})
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	tn.Node = n
	tn.srv = &http.Server{Handler: NewAPI(n).Handler(false)}
	go tn.srv.Serve(ln)
	return tn
}

func (tn *testNode) stop() {
	if tn.Node == nil {
		return
	}
	tn.srv.Close()
	tn.Node.Shutdown()
	tn.trans.Close()
	tn.gos.Shutdown()
	tn.Node = nil
}

// partition cuts Raft, gossip and API traffic between id and every other
// node; heal restores it.
func (c *testCluster) partition(id string) {
	c.setCut(id, true)
}

func (c *testCluster) heal(id string) {
	c.setCut(id, false)
}

func (c *testCluster) setCut(id string, cut bool) {
	x := c.nodes[id]
	c.net.mu.Lock()
	for oid := range c.nodes {
		if oid != id {
			c.net.cut[[2]string{id, oid}] = cut
			c.net.cut[[2]string{oid, id}] = cut
		}
	}
	c.net.mu.Unlock()
	for oid, o := range c.nodes {
		if oid == id || o.Node == nil {
			continue
		}
		if cut {
			x.trans.Disconnect(o.trans.LocalAddr())
			o.trans.Disconnect(x.trans.LocalAddr())
		} else {
			x.trans.Connect(o.trans.LocalAddr(), o.trans)
			o.trans.Connect(x.trans.LocalAddr(), x.trans)
		}
	}
}

// waitFor polls cond until it holds or the (generous) limit passes; it is a
// bound on waiting, not a timing assertion.
func (c *testCluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leader waits for a leader among the running nodes not in except.
func (c *testCluster) leader(except ...string) *testNode {
	c.t.Helper()
	var l *testNode
	c.waitFor("a leader", func() bool {
		for id, n := range c.nodes {
			skip := n.Node == nil
			for _, e := range except {
				skip = skip || e == id
			}
			if !skip && n.IsLeader() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// threeNodes starts n1 (bootstrap), then n2 and n3 joining through n1's API,
// and waits until every node has all three registered and alive.
func threeNodes(t *testing.T) *testCluster {
	return threeNodesWith(t, nil)
}

// threeNodesWith is threeNodes with mod applied to every node's config.
func threeNodesWith(t *testing.T, mod func(*Config)) *testCluster {
	c := newTestCluster(t)
	n1 := c.start("n1", true, mod)
	c.leader()
	for _, id := range []string{"n2", "n3"} {
		n := c.start(id, false, mod)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := n.JoinVia(ctx, n1.cfg.APIAddr)
		cancel()
		if err != nil {
			t.Fatalf("%s join: %v", id, err)
		}
	}
	c.waitConverged("three alive registered nodes", func(s *State) bool {
		if len(s.Nodes) != 3 {
			return false
		}
		for _, n := range s.Nodes {
			if n.Health != HealthAlive {
				return false
			}
		}
		return true
	})
	return c
}

// waitConverged waits until every running node's state satisfies cond and
// all their states encode to the same bytes.
func (c *testCluster) waitConverged(what string, cond func(*State) bool) {
	c.t.Helper()
	c.waitFor(what, func() bool {
		var ref []byte
		for _, n := range c.nodes {
			if n.Node == nil {
				continue
			}
			s := n.fsm.State()
			if !cond(s) {
				return false
			}
			var b bytes.Buffer
			EncodeState(&b, s)
			if ref == nil {
				ref = b.Bytes()
			} else if !bytes.Equal(ref, b.Bytes()) {
				return false
			}
		}
		return true
	})
}

func (c *testCluster) apply(n *testNode, typ string, p any) error {
	c.t.Helper()
	cmd, err := NewCommand(typ, p)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = n.Apply(ctx, cmd)
	return err
}

func (c *testCluster) follower() *testNode {
	l := c.leader()
	for _, n := range c.nodes {
		if n != l && n.Node != nil {
			return n
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// createLUN creates target iqn (if needed) and LUN lun on it with the
// given placement (its first node owns it), through the leader, and waits
// until every running node has it.
func (c *testCluster) createLUN(iqn string, lun uint64, placement ...string) {
	c.t.Helper()
	l := c.leader()
	if err := c.apply(l, CmdTargetCreate, TargetCreate{IQN: iqn}); err != nil && !errors.Is(err, ErrTargetExists) {
		c.t.Fatalf("create target %s: %v", iqn, err)
	}
	if err := c.apply(l, CmdLUNCreate, LUNCreate{LUN: LUN{Target: iqn, LUN: lun, Size: 1 << 20, SectorSize: 512,
		IOMode: IOModeWriteThrough, Backing: BackingFile, Replicas: len(placement), Placement: placement}}); err != nil {
		c.t.Fatalf("create LUN %d on %s: %v", lun, iqn, err)
	}
	c.waitConverged(fmt.Sprintf("LUN %d on %s everywhere", lun, iqn), func(s *State) bool {
		t := s.Targets[iqn]
		return t != nil && t.LUNs[lun] != nil
	})
}

// lunOn returns LUN lun of target iqn in n's state, or nil.
func lunOn(n *testNode, iqn string, lun uint64) *LUN {
	t := n.fsm.State().Targets[iqn]
	if t == nil {
		return nil
	}
	return t.LUNs[lun]
}
