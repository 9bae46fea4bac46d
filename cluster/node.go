package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/hatgt/hatgt/replication"
)

// Deps are the pieces of a Node that tests replace: Raft's transport and
// stores, memberlist's transport, and the HTTP client used to forward
// changes to the leader. Start builds the production ones.
type Deps struct {
	Transport     raft.Transport
	LogStore      raft.LogStore
	StableStore   raft.StableStore
	SnapshotStore raft.SnapshotStore
	// GossipTransport nil means memberlist's own UDP+TCP transport bound to
	// Config.GossipAddr.
	GossipTransport memberlist.Transport
	// HTTPClient nil means a client with Config.ApplyTimeout as timeout.
	HTTPClient *http.Client
	// Closers are closed, in order, after Raft shut down.
	Closers []io.Closer
	// Clock is the time source of the owner lease (nil: the system
	// clock). A test pauses it to model a stalled node.
	Clock replication.Clock
	// ApplyFault, if set, is asked after each command that Apply got
	// committed; a non-nil error is returned to Apply's caller although
	// the command committed: an ambiguous apply (a timeout after the
	// append, an answer lost on its way back), which a fault simulator
	// injects. Callers must treat any Apply error as "maybe committed".
	ApplyFault func(cmd Command) error
}

// Node is one member of a hatgt cluster: the Raft replica of the state
// machine, its memberlist agent and the loops around them.
type Node struct {
	cfg   Config
	log   hclog.Logger
	fsm   *FSM
	raft  *raft.Raft
	trans raft.Transport
	ml    *memberlist.Memberlist
	hc    *http.Client
	deps  Deps

	started   time.Time
	notifyCh  chan bool     // raft leadership changes
	kick      chan struct{} // memberlist events: re-check health
	foKick    chan struct{} // state, leadership or heartbeat changes: re-check owners
	leaseKick chan struct{} // became leader: renew the lease now
	lease     *lease        // see HoldsLease
	clock     replication.Clock
	reach     reachClock // leader only: nodes out of reach, since when (failover.go)

	mu         sync.Mutex
	lastSeen   map[string]time.Time // memberlist ping acks, by node ID
	hbFailed   map[string]time.Time // leader only: followers whose heartbeats fail, since when
	gone       map[string]string    // nodes memberlist reported dead or left (and not back)
	observer   *raft.Observer
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closeOnce  sync.Once
	shutdownCh chan struct{}
	createMu   sync.Mutex // leader: one LUN create at a time (createLUN)
}

// raftRPCTimeout bounds every Raft RPC's dial and IO (see Start).
const raftRPCTimeout = time.Second

// Start opens the node's stores under cfg.DataDir (raft/raft.db for log and
// stable store, raft/snapshots/), binds Raft's TCP transport on RaftAddr and
// memberlist on GossipAddr, and starts the node. ctx bounds only the start;
// stop the node with Shutdown or Leave.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	dir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	store, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("cluster: open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, cfg.SnapshotRetain, logger.Named("snapshot"))
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("cluster: raft address: %w", err)
	}
	// The RPC timeout is how long a heartbeat to a node cut off without a
	// reset (a dead switch port, a machine powered off) hangs before the
	// leader sees it fail, which starts the failover clock: 1s, not
	// Raft's usual 10s (a LAN answers in milliseconds; snapshot transfers
	// get a longer deadline by their size).
	trans, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, adv, 3, raftRPCTimeout, logger.Named("raft-net"))
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("cluster: raft transport: %w", err)
	}
	n, err := NewNode(cfg, Deps{
		Transport: trans, LogStore: store, StableStore: store, SnapshotStore: snaps,
		Closers: []io.Closer{trans, store},
	})
	if err != nil {
		trans.Close()
		store.Close()
		return nil, err
	}
	return n, nil
}

// NewNode starts a node over the given dependencies.
func NewNode(cfg Config, deps Deps) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	n := &Node{
		cfg:        cfg,
		log:        log,
		fsm:        NewFSM(log.Named("fsm")),
		trans:      deps.Transport,
		deps:       deps,
		hc:         deps.HTTPClient,
		started:    time.Now(),
		notifyCh:   make(chan bool, 16),
		kick:       make(chan struct{}, 1),
		foKick:     make(chan struct{}, 1),
		leaseKick:  make(chan struct{}, 1),
		lastSeen:   map[string]time.Time{},
		hbFailed:   map[string]time.Time{},
		gone:       map[string]string{},
		shutdownCh: make(chan struct{}),
	}
	if n.hc == nil {
		n.hc = &http.Client{Timeout: cfg.ApplyTimeout}
	}
	n.clock = deps.Clock
	if n.clock == nil {
		n.clock = replication.SystemClock{}
	}
	n.lease = newLease(n.clock, cfg.OwnerLease)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.NotifyCh = n.notifyCh
	rc.Logger = log.Named("raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("cluster: raft config: %w", err)
	}
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(deps.LogStore, deps.StableStore, deps.SnapshotStore)
		if err != nil {
			return nil, fmt.Errorf("cluster: read raft state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: rc.LocalID, Address: deps.Transport.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(rc, deps.LogStore, deps.StableStore, deps.SnapshotStore, deps.Transport, conf); err != nil {
				return nil, fmt.Errorf("cluster: bootstrap: %w", err)
			}
		}
	}
	r, err := raft.NewRaft(rc, notifyFSM{n.fsm, n}, deps.LogStore, deps.StableStore, deps.SnapshotStore, deps.Transport)
	if err != nil {
		return nil, fmt.Errorf("cluster: start raft: %w", err)
	}
	n.raft = r
	obsCh := make(chan raft.Observation, 64)
	n.observer = raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(n.observer)

	if err := n.startGossip(deps.GossipTransport); err != nil {
		r.Shutdown().Error()
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(5)
	go n.leaseLoop(ctx)
	go n.observeLoop(ctx, obsCh)
	go n.healthLoop(ctx)
	go n.failoverLoop(ctx)
	go n.rejoinGossip(ctx)
	if cfg.Reconciler != nil {
		n.wg.Add(1)
		go n.reconcileLoop(ctx, cfg.Reconciler)
	}
	return n, nil
}

// ID returns the node's ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// FSM returns the node's state machine (read it with State).
func (n *Node) FSM() *FSM { return n.fsm }

// Raft returns the underlying Raft instance (for status and tests).
func (n *Node) Raft() *raft.Raft { return n.raft }

// Info returns this node's addresses as the state machine records them.
func (n *Node) Info() NodeInfo {
	return NodeInfo{
		ID: n.cfg.NodeID, APIAddr: n.cfg.APIAddr, ISCSIPortal: n.cfg.ISCSIPortal,
		RaftAddr: string(n.trans.LocalAddr()), GossipAddr: n.gossipAddr(),
		ReplicationAddr: n.cfg.ReplicationAddr,
	}
}

func (n *Node) gossipAddr() string {
	if n.ml == nil {
		return n.cfg.GossipAddr
	}
	ln := n.ml.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), fmt.Sprint(ln.Port))
}

// Done is closed when the node has shut down (Shutdown, or Leave): the
// serve command exits then.
func (n *Node) Done() <-chan struct{} { return n.shutdownCh }

// IsLeader reports whether this node is the Raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Shutdown stops the node without leaving the cluster (a crash, as the
// others see it, or a restart).
func (n *Node) Shutdown() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.shutdownCh)
		n.cancel()
		if n.ml != nil {
			if e := n.ml.Shutdown(); e != nil {
				err = e
			}
		}
		if e := n.raft.Shutdown().Error(); e != nil && err == nil {
			err = e
		}
		n.raft.DeregisterObserver(n.observer)
		n.wg.Wait()
		for _, c := range n.deps.Closers {
			if e := c.Close(); e != nil && err == nil {
				err = e
			}
		}
	})
	return err
}

// observeLoop tracks, on the leader, which followers miss heartbeats.
func (n *Node) observeLoop(ctx context.Context, ch <-chan raft.Observation) {
	defer n.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case lead := <-n.notifyCh:
			n.kickFailover()
			if lead {
				select {
				case n.leaseKick <- struct{}{}:
				default:
				}
				// Fresh heartbeat bookkeeping for this term; after a
				// step-down the last view is kept for error messages.
				n.mu.Lock()
				clear(n.hbFailed)
				n.mu.Unlock()
				n.log.Info("became leader")
				n.kickHealth()
			}
		case o := <-ch:
			n.mu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				// The first failure since the heartbeats last worked:
				// the failover clock may start there (failover.go). Not
				// Raft's LastContact: a pipelined AppendEntries that
				// times out refreshes it.
				id := string(d.PeerID)
				if _, was := n.hbFailed[id]; !was {
					n.log.Warn("Raft heartbeats to a node failing", "peer", id)
					n.hbFailed[id] = time.Now()
				}
			case raft.ResumedHeartbeatObservation:
				delete(n.hbFailed, string(d.PeerID))
			}
			n.mu.Unlock()
			n.kickFailover()
		}
	}
}

// voters returns the IDs of the voters of the current Raft configuration.
func (n *Node) voters() []string {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var ids []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			ids = append(ids, string(s.ID))
		}
	}
	return ids
}

// reachableVoters counts the voters this node can reach now: itself, plus
// each voter that memberlist does not see dead, that (on the leader) is not
// missing heartbeats, and whose API answers a probe within a second.
func (n *Node) reachableVoters() (reach, total int) {
	vs := n.voters()
	st := n.fsm.State()
	health := n.gossipHealth()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	results := make(chan bool, len(vs))
	for _, id := range vs {
		if id == n.cfg.NodeID {
			results <- true
			continue
		}
		n.mu.Lock()
		_, failed := n.hbFailed[id]
		n.mu.Unlock()
		ni, known := st.Nodes[id]
		if failed || (health[id] != "" && health[id] != HealthAlive) || !known || ni.APIAddr == "" {
			results <- false
			continue
		}
		go func(id, addr string) {
			got, err := NewClient(addr, "", n.hc).Ping(ctx)
			results <- err == nil && got == id
		}(id, ni.APIAddr)
	}
	for range vs {
		if <-results {
			reach++
		}
	}
	return reach, len(vs)
}

func (n *Node) noLeaderError() error {
	r, m := n.reachableVoters()
	if m == 0 {
		return errf(ErrNoLeader, "no cluster leader: this node is in no cluster yet (bootstrap it, or join it to a member)")
	}
	return errf(ErrNoLeader, "no cluster leader: quorum lost? %d of %d voters reachable", r, m)
}

// Leader returns the ID and API address of the current leader, or "" when
// none is known.
func (n *Node) Leader() (id, apiAddr string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	id = string(lid)
	if id == n.cfg.NodeID {
		return id, n.cfg.APIAddr
	}
	n.fsm.mu.RLock()
	if ni, ok := n.fsm.state.Nodes[id]; ok {
		apiAddr = ni.APIAddr
	}
	n.fsm.mu.RUnlock()
	if apiAddr == "" {
		if meta, ok := n.gossipMeta(id); ok {
			apiAddr = meta.APIAddr
		}
	}
	return id, apiAddr
}

var errRetry = errors.New("retry")

// Apply makes a change through the leader: it runs the command here if this
// node leads, or forwards it to the leader's API. It waits at most
// Config.ApplyTimeout (or until ctx ends) for a leader and the commit, then
// fails with ErrNoLeader saying how many voters were reachable. A command
// that the state machine refuses returns its *Error.
func (n *Node) Apply(ctx context.Context, cmd Command) (uint64, error) {
	idx, err := n.submit(ctx, &Op{Kind: OpCommand, Command: &cmd})
	if err == nil && n.deps.ApplyFault != nil {
		err = n.deps.ApplyFault(cmd)
	}
	return idx, err
}

// Op is a change as forwarded from a follower to the leader.
type Op struct {
	Kind    string    `json:"kind"`
	Command *Command  `json:"command,omitempty"`
	Node    *NodeInfo `json:"node,omitempty"` // join
	NodeID  string    `json:"node_id,omitempty"`
	// Force: a leave that leaves the LUNs without another in-sync copy
	// without an owner (LeaveOptions.Force).
	Force bool `json:"force,omitempty"`
}

// Op kinds.
const (
	OpCommand = "command"
	OpJoin    = "join"   // add Node as a voter and register it
	OpRemove  = "remove" // remove NodeID (dead) from Raft and the state
	OpLeave   = "leave"  // remove NodeID, which asked to leave
	// OpBarrier asks the leader for the index of everything committed so
	// far (after a Raft barrier): a node that waits until it applied it
	// decides on the whole state (CatchUp).
	OpBarrier = "barrier"
)

// OpResult is the leader's answer to an Op.
type OpResult struct {
	Index uint64 `json:"index"`
	Error *Error `json:"error,omitempty"`
}

func (n *Node) submit(ctx context.Context, op *Op) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	for {
		var (
			idx uint64
			err error
		)
		if n.IsLeader() {
			idx, err = n.execute(ctx, op)
		} else if _, addr := n.Leader(); addr != "" {
			idx, err = n.forward(ctx, addr, op)
			if err == nil && (op.Kind == OpCommand || op.Kind == OpBarrier) {
				n.waitForwarded(ctx, idx) // read your writes
			}
		} else {
			err = errRetry
		}
		if !errors.Is(err, errRetry) {
			return idx, err
		}
		select {
		case <-n.shutdownCh:
			return 0, ErrShutdown
		case <-ctx.Done():
			return 0, n.noLeaderError()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// execute runs op on the leader. Raft errors that another leader may not
// have (lost leadership, not leader) become errRetry.
func (n *Node) execute(ctx context.Context, op *Op) (uint64, error) {
	switch op.Kind {
	case OpBarrier:
		if err := raftErr(n.raft.Barrier(timeLeft(ctx)).Error()); err != nil {
			return 0, err
		}
		// The state machine's index (of the last command), not Raft's:
		// barriers and configuration entries never reach a state machine.
		return n.fsm.AppliedIndex(), nil
	case OpCommand:
		if op.Command == nil {
			return 0, errf(ErrBadCommand, "command op without command")
		}
		if op.Command.Type == CmdLUNCreate {
			return n.createLUN(ctx, *op.Command)
		}
		cmd, err := n.prepare(*op.Command)
		if err != nil {
			return 0, err
		}
		return n.applyRaft(ctx, cmd)
	case OpJoin:
		if op.Node == nil {
			return 0, errf(ErrBadCommand, "join without node")
		}
		ni := *op.Node
		if err := checkNodeInfo(&ni); err != nil {
			return 0, err
		}
		if err := n.addVoter(ctx, ni.ID, ni.RaftAddr); err != nil {
			return 0, err
		}
		cmd, _ := NewCommand(CmdNodeRegister, NodeRegister{Node: ni})
		return n.applyRaft(ctx, cmd)
	case OpRemove, OpLeave:
		if op.Kind == OpRemove && n.gossipHealth()[op.NodeID] == HealthAlive {
			return 0, errf(ErrInvalid, "node %s is alive: run \"hatgt leave\" on it, or stop it first", op.NodeID)
		}
		if err := n.beforeRemove(ctx, op); err != nil {
			return 0, err // remove.go: no LUN moves while its owner may serve it
		}
		known := false
		for _, id := range n.voters() {
			if id == op.NodeID {
				known = true
			}
		}
		if known {
			f := n.raft.RemoveServer(raft.ServerID(op.NodeID), 0, timeLeft(ctx))
			if err := raftErr(f.Error()); err != nil {
				return 0, err
			}
		}
		cmd, _ := NewCommand(CmdNodeRemove, NodeRemove{ID: op.NodeID})
		idx, err := n.applyRaft(ctx, cmd)
		if known && errors.Is(err, ErrUnknownNode) {
			return idx, nil // was a voter that never registered
		}
		return idx, err
	}
	return 0, errf(ErrBadCommand, "unknown op kind %q", op.Kind)
}

func (n *Node) addVoter(ctx context.Context, id, addr string) error {
	f := n.raft.GetConfiguration()
	if err := raftErr(f.Error()); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id && string(s.Address) == addr && s.Suffrage == raft.Voter {
			return nil
		}
	}
	return raftErr(n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeLeft(ctx)).Error())
}

// prepare fills in what the leader decides before proposing a command
// (a new LUN: createLUN) and checks what the state machine does not: a new
// target's name is the config file's kind of name, stored lower case.
func (n *Node) prepare(cmd Command) (Command, error) {
	if cmd.Type != CmdTargetCreate {
		return cmd, nil
	}
	var p TargetCreate
	if err := decodePayload(cmd, &p); err != nil {
		return cmd, err
	}
	n.fsm.mu.RLock()
	err := checkTargetCreate(n.fsm.state, &p)
	n.fsm.mu.RUnlock()
	if err != nil {
		return cmd, err
	}
	return NewCommand(CmdTargetCreate, p)
}

func (n *Node) applyRaft(ctx context.Context, cmd Command) (uint64, error) {
	f := n.raft.Apply(cmd.Encode(), timeLeft(ctx))
	if err := raftErr(f.Error()); err != nil {
		return 0, err
	}
	if resp, ok := f.Response().(error); ok && resp != nil {
		return f.Index(), resp
	}
	return f.Index(), nil
}

// raftErr turns the Raft errors that a retry (maybe with another leader)
// can cure into errRetry.
func raftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress),
		errors.Is(err, raft.ErrAbortedByRestore):
		return errRetry
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	}
	return err
}

func timeLeft(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Millisecond
	}
	return 0
}
