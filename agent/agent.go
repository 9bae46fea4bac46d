package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
	"github.com/hatgt/hatgt/scsi"
	"github.com/hatgt/hatgt/target"
)

// Agent is one running cluster node: its Raft member and admin API
// (cluster.Node), the iSCSI target kept equal to the cluster state by the
// reconciler, and the replication side (mirror and owner volumes).
type Agent struct {
	cfg  Config
	log  *slog.Logger
	node *cluster.Node
	srv  *target.Server
	rec  *reconciler
	repl *replicaHost

	iscsi, api net.Listener
	portal     string

	cancel  context.CancelFunc // stops the API and the join loop
	apiDone chan struct{}
	errc    chan error // a portal, the API or the replication port failed
	wg      sync.WaitGroup

	bootID func() string

	stopOnce sync.Once
	stopErr  error
}

// New starts a node: it listens (unless deps gives listeners), starts the
// cluster member with the reconciler, the replication side, the admin API
// and the iSCSI portal. ctx bounds the start only. On error nothing is left
// running.
func New(ctx context.Context, cfg Config, deps Deps) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	bootID := readBootID
	if deps.BootID != nil {
		bootID = deps.BootID
	}
	suspect, err := startRun(cfg.DataDir, bootID())
	if err != nil {
		return nil, err
	}
	if suspect {
		log.Warn("the previous run did not shut down cleanly and the machine rebooted since: write-back copies may have lost acknowledged writes from their caches; they are compared with an in-sync copy before this node trusts them")
	}
	a := &Agent{cfg: cfg, log: log, errc: make(chan error, 4), apiDone: make(chan struct{}), bootID: bootID}
	var opened []net.Listener
	defer func() {
		if err != nil {
			for _, l := range opened {
				l.Close()
			}
		}
	}()
	// Listen first: a busy port is the commonest start-up failure.
	listen := func(l net.Listener, what, addr string) (net.Listener, error) {
		if l == nil {
			var err error
			if l, err = net.Listen("tcp", addr); err != nil {
				return nil, fmt.Errorf("%s %s: %w", what, addr, ListenError(err))
			}
		}
		opened = append(opened, l)
		return l, nil
	}
	if a.iscsi, err = listen(deps.ISCSIListener, "iSCSI portal", cfg.ISCSIAddr); err != nil {
		return nil, err
	}
	if a.api, err = listen(deps.APIListener, "admin API", cfg.APIAddr); err != nil {
		return nil, err
	}
	replLn, err := listen(deps.ReplListener, "replication port", cfg.ReplAddr)
	if err != nil {
		return nil, err
	}
	a.portal = a.iscsi.Addr().String()

	var stateFn func() *cluster.State
	var rec *reconciler
	a.srv, err = target.NewServer(target.ServerConfig{
		Logger:  log.With("component", "target"),
		Portals: func(name string) []target.Portal { return rec.portals(name) },
	})
	if err != nil {
		return nil, err
	}
	// The node is created after the reconciler and the replication side
	// it drives; until then the state is nil, which both handle.
	var node *cluster.Node
	stateFn = func() *cluster.State {
		if node == nil {
			return nil
		}
		return node.FSM().State()
	}
	rec = newReconciler(log.With("component", "reconcile"), a.srv, cfg.NodeID, func() *cluster.State { return stateFn() })
	if deps.OpenStore != nil {
		rec.open = deps.OpenStore
	}
	if deps.EnsureBacking != nil {
		rec.ensure = deps.EnsureBacking
	}
	a.rec = rec
	// Whether this node serves each copy placed here goes into the state
	// (copy.report), for status. The node exists before rep runs.
	rep := newReporter(log.With("component", "report"), cfg.NodeID, func() *cluster.State { return stateFn() },
		func(ctx context.Context, cmd cluster.Command) error {
			_, err := node.Apply(ctx, cmd)
			return err
		})
	rec.report = rep.observe
	a.repl = newReplicaHost(log.With("component", "replication"), cfg.NodeID, cfg.DataDir, replLn,
		replicationResolver(func() *cluster.State { return stateFn() }), deps.Dial)
	a.repl.resyncRate = cfg.ResyncRate
	a.repl.suspect = suspect
	a.repl.volumeConfig = cfg.replicationConfig()
	a.repl.writeHook = deps.WriteHook
	if deps.Clock != nil {
		a.repl.clock = deps.Clock
	}
	rec.repl = a.repl

	cc := cfg.clusterConfig()
	cc.Release = a.repl // a leave stops the owner volumes before the handover
	// Before the leader commits a LUN with a copy here, this node creates
	// and opens its backing store: a LUN it cannot hold is refused.
	cc.Preparer = newPreparer(log.With("component", "prepare"), rec.ensure, rec.open)
	// The replication side needs the node, and the node's first reconcile
	// needs the replication side: the reconciler waits until it is wired.
	ready := make(chan struct{})
	cc.Reconciler = cluster.ReconcilerFunc(func(ctx context.Context, d *cluster.Desired) error {
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
		return rec.Reconcile(ctx, d)
	})
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if deps.Cluster != nil {
		cd := *deps.Cluster
		if cd.HTTPClient == nil {
			cd.HTTPClient = deps.HTTPClient
		}
		if cd.Clock == nil {
			cd.Clock = deps.Clock
		}
		node, err = cluster.NewNode(cc, cd)
	} else {
		node, err = cluster.Start(sctx, cc)
	}
	if err != nil {
		return nil, err
	}
	a.node = node
	if !brokenResvLocal {
		rec.resv = node
	}
	coord := cluster.NewCoordinator(node)
	a.repl.coord = coord
	// The mirror takes a newer epoch only once this node applied it:
	// a forged frame cannot fence a copy against its real owner.
	a.repl.mirror.SetEpochCheck(coord.CheckEpoch)
	a.repl.state = stateFn
	a.repl.lease = node.Lease
	a.repl.leaseValid = node.LeaseValid
	a.repl.propose = func(ctx context.Context, iqn string, lun uint64, owner string, epoch uint64) error {
		cmd, err := cluster.NewCommand(cluster.CmdLUNSetOwner, cluster.LUNSetOwner{IQN: iqn, LUN: lun, Owner: owner, Epoch: epoch})
		if err == nil {
			_, err = node.Apply(ctx, cmd)
		}
		return err
	}
	a.repl.reconcile = func() {
		fsm := node.FSM()
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d := cluster.DesiredFor(fsm.State(), cfg.NodeID, cfg.DataDir, fsm.AppliedIndex())
		if err := rec.Reconcile(rctx, d); err != nil {
			log.Debug("reconcile after a deposed volume", "err", err)
		}
	}
	a.repl.start(a.errc)

	actx, acancel := context.WithCancel(context.Background())
	a.cancel = acancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		rep.run(actx)
	}()
	close(ready)

	go func() {
		defer close(a.apiDone)
		api := cluster.NewAPI(node)
		api.SetVerifier(a.repl.verifier())
		if err := api.Serve(actx, a.api); err != nil {
			a.errc <- fmt.Errorf("admin API: %w", err)
		}
	}()
	go func() {
		if err := a.srv.Serve(a.iscsi); err != nil && !errors.Is(err, target.ErrServerClosed) {
			a.errc <- fmt.Errorf("portal %s: %w", a.portal, err)
		}
	}()
	if cfg.Join != "" {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.joinLoop(actx, cfg.Join)
		}()
	}
	log.Info("serving", "portal", a.portal, "api", cc.APIAddr, "raft", cc.RaftAddr, "gossip", cc.GossipAddr)
	return a, nil
}

// Run waits until ctx ends, the node leaves the cluster, or a listener
// fails, then shuts the node down within shutdownTimeout. It returns the
// failure, if any.
func (a *Agent) Run(ctx context.Context, shutdownTimeout time.Duration) error {
	var failed error
	select {
	case <-ctx.Done():
		a.log.Info("signal received, shutting down", "timeout", shutdownTimeout)
	case <-a.node.Done():
		a.log.Info("left the cluster, shutting down")
	case err := <-a.errc:
		failed = err
		a.log.Error("shutting down", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil {
		a.log.Error("shutdown", "err", err)
		failed = cmp(failed, err)
	}
	return failed
}

// Repairing returns how many LUNs this node, their new owner, is still
// comparing with their in-sync copies after a takeover (the copies may
// differ where the previous owner had writes in flight until it is done).
func (a *Agent) Repairing() int { return int(a.repl.repairs.Load()) }

// Node returns the node's cluster member.
func (a *Agent) Node() *cluster.Node { return a.node }

// Portal returns the iSCSI portal address the node listens on.
func (a *Agent) Portal() string { return a.portal }

// APIAddr returns the address the admin API listens on.
func (a *Agent) APIAddr() string { return a.api.Addr().String() }

// Errors delivers the failure of a listener (the portal, the admin API, the
// replication port); the node should then be shut down.
func (a *Agent) Errors() <-chan error { return a.errc }

// Device returns the SCSI device of target iqn as this node serves it, or
// nil: what an iSCSI session of the target executes its commands on. Tests
// drive IO through it without an iSCSI initiator.
func (a *Agent) Device(iqn string) *scsi.Device {
	a.rec.mu.Lock()
	defer a.rec.mu.Unlock()
	if rt := a.rec.targets[strings.ToLower(iqn)]; rt != nil {
		return rt.dev
	}
	return nil
}

// member reports whether this node is already a voter of a cluster (a
// restart, or a join that went through).
func (a *Agent) member() bool {
	fut := a.node.Raft().GetConfiguration()
	if fut.Error() != nil {
		return false
	}
	for _, s := range fut.Configuration().Servers {
		if string(s.ID) == a.node.ID() {
			return true
		}
	}
	return false
}

// joinLoop joins the cluster through peer, retrying until it succeeds or
// ctx ends: the peer may be starting too. A refused admin token never
// cures itself: that stops the node (Run returns the error).
func (a *Agent) joinLoop(ctx context.Context, peer string) {
	if a.member() {
		a.log.Info("already a cluster member, not joining again", "peer", peer)
		return
	}
	for attempt := 0; ; attempt++ {
		jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := a.node.JoinVia(jctx, peer)
		cancel()
		if err == nil {
			a.log.Info("joined the cluster", "peer", peer)
			return
		}
		if errors.Is(err, cluster.ErrUnauthorized) {
			select {
			case a.errc <- fmt.Errorf("cannot join: %w", err):
			case <-ctx.Done():
			}
			return
		}
		if attempt == 0 || attempt%10 == 0 {
			a.log.Warn("join failed, retrying", "peer", peer, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.node.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// Shutdown stops the node without leaving the cluster (the others see it
// as down), drains the iSCSI server (commands in flight finish until ctx
// ends), then flushes and closes every LUN, and records the clean stop. It
// is safe to call twice.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.stopOnce.Do(func() {
		a.stopErr = a.shutdown(ctx)
		if a.stopErr == nil {
			a.stopErr = endRun(a.cfg.DataDir, a.bootID())
		}
	})
	return a.stopErr
}

// Abort stops the node as a crash would, for a test that runs nodes in
// one process: nothing is flushed or drained, no clean stop is recorded;
// its goroutines end and its listeners close.
func (a *Agent) Abort() {
	a.rec.mu.Lock()
	a.rec.abort, a.repl.abort = true, true
	a.rec.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a.stopOnce.Do(func() { a.stopErr = a.shutdown(ctx) })
}

func (a *Agent) shutdown(ctx context.Context) error {
	var first error
	if err := a.node.Shutdown(); err != nil {
		first = fmt.Errorf("cluster: %w", err)
	}
	a.cancel()
	<-a.apiDone
	a.wg.Wait()
	if err := a.srv.Shutdown(ctx); err != nil {
		a.log.Warn("commands still in flight when the shutdown timeout expired; connections closed", "err", err)
	}
	a.iscsi.Close()
	a.repl.stop()
	if err := a.rec.close(); err != nil {
		if errors.Is(err, replication.ErrNotOwner) {
			// A replicated LUN's last flush could not reach a copy
			// and, Raft being stopped, not drop it either: the copy
			// stays in sync in Raft, and the next owner compares it
			// with its own copy (CheckOnOpen) before trusting it.
			a.log.Warn("closing replicated LUNs: a copy missed the last flush", "err", err)
		} else {
			a.log.Error("closing LUNs", "err", err)
			first = cmp(first, err)
		}
	}
	return first
}

// replicationResolver finds a node's replication address in the cluster
// state.
func replicationResolver(state func() *cluster.State) replication.Resolver {
	return func(id replication.NodeID) (string, error) {
		st := state()
		if st == nil {
			return "", errors.New("cluster state not available yet")
		}
		ni := st.Nodes[string(id)]
		if ni == nil || ni.ReplicationAddr == "" {
			return "", fmt.Errorf("node %s has no replication address in the cluster state", id)
		}
		return ni.ReplicationAddr, nil
	}
}

// ListenError shortens the usual listen failures to what to do about them.
func ListenError(err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return errors.New("address already in use (another hatgt, tgtd or iscsitarget running? pick another port)")
	case errors.Is(err, syscall.EACCES):
		return errors.New("permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)")
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return errors.New("no such address on this machine")
	}
	return err
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
