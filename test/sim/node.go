package sim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/hatgt/hatgt/agent"
	"github.com/hatgt/hatgt/blockstore"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/internal/simnet"
	"github.com/hatgt/hatgt/scsi"
)

// Ports of every simulated node, on its simnet host.
const (
	portISCSI  = 3260
	portAPI    = 3270
	portRaft   = 3271
	portGossip = 3272
	portRepl   = 3273
)

// node is one simulated hatgt node: a real agent.Agent on a simnet host,
// with what survives its crashes kept here: its Raft log and stable store
// (fsynced on a real node), its data directory (dirty maps, markers), and
// its disks (blockstore.Crash: a power loss drops what was not flushed).
type node struct {
	s     *Sim
	id    string
	host  *simnet.Host
	clock *pausableClock
	dir   string
	logs  *raft.InmemStore
	snaps *raft.InmemSnapshotStore

	mu      sync.Mutex
	disks   map[string]*disk // by backing path
	a       *agent.Agent
	paused  bool
	resumed chan struct{} // closed at resume
	// ambiguous makes this node's applies of replication commands return
	// an error after they committed.
	ambiguous atomic.Bool
	// boots counts the machine's boots: a power loss is a reboot.
	boots atomic.Int64
	// dark: the machine is off (after a power loss) and cut from the
	// network until it starts again.
	dark bool
}

// disk is a LUN's backing store on a node: survives restarts; a power loss
// drops its unflushed writes; write-through mode makes every write durable
// (O_DSYNC).
type disk struct {
	*blockstore.Crash
	writeThrough bool
	// regionWrites counts writes of 64 KiB or more: a resync's (the
	// workload writes 4 KiB blocks).
	regionWrites atomic.Int64
	lun          uint64 // the LUN number
}

func (d *disk) WriteAt(p []byte, off int64) (int, error) {
	if len(p) >= 64<<10 {
		d.regionWrites.Add(1)
	}
	if d.writeThrough {
		return d.Crash.WriteAtFUA(p, off)
	}
	return d.Crash.WriteAt(p, off)
}

// Close leaves the disk as it is (the node keeps it for its next start).
func (d *disk) Close() error { return nil }

var _ agent.Store = (*disk)(nil)

func (n *node) addr(port int) string { return n.host.Addr(port) }

// start runs a new agent on the node (a process start: a restart after a
// crash, kill or stop).
func (n *node) start(bootstrap bool, join string) error {
	s := n.s
	n.mu.Lock()
	if n.dark {
		n.dark = false
		s.net.Reconnect(n.id)
	}
	n.mu.Unlock()
	var err error
	fail := func(e error) error {
		err = e
		n.s.net.Crash(n.id) // release whatever was bound
		return fmt.Errorf("start %s: %w", n.id, err)
	}
	iscsi, err := n.host.Listen(fmt.Sprintf(":%d", portISCSI))
	if err != nil {
		return fail(err)
	}
	api, err := n.host.Listen(fmt.Sprintf(":%d", portAPI))
	if err != nil {
		return fail(err)
	}
	repl, err := n.host.Listen(fmt.Sprintf(":%d", portRepl))
	if err != nil {
		return fail(err)
	}
	layer, err := n.host.RaftLayer(fmt.Sprintf(":%d", portRaft))
	if err != nil {
		return fail(err)
	}
	gossip, err := n.host.GossipTransport(fmt.Sprintf(":%d", portGossip))
	if err != nil {
		return fail(err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: n.id, Level: hclog.Info, Output: s.logs})
	trans := raft.NewNetworkTransportWithLogger(layer, 3, time.Second, hlog.Named("raft-net"))
	cc := s.clusterConfig()
	cc.Logger = hlog
	deps := agent.Deps{
		ISCSIListener: iscsi, APIListener: api, ReplListener: repl,
		Cluster: &cluster.Deps{
			Transport: trans, LogStore: n.logs, StableStore: n.logs, SnapshotStore: n.snaps,
			GossipTransport: gossip, Closers: []io.Closer{trans},
			ApplyFault: n.applyFault,
		},
		HTTPClient: &http.Client{Timeout: cc.ApplyTimeout, Transport: &http.Transport{DialContext: n.host.DialContext}},
		Dial:       n.host.DialContext,
		Clock:      n.clock,
		OpenStore:  n.openDisk,
		EnsureBacking: func(l cluster.DesiredLUN) (bool, error) {
			_, created := n.disk(l)
			return created, nil
		},
		WriteHook: func(lunID, epoch uint64, off int64, data []byte) { s.ackedWrite(lunID, epoch, off, data) },
		BootID:    func() string { return fmt.Sprintf("%s-boot-%d", n.id, n.boots.Load()) },
	}
	cfg := agent.Config{
		NodeID: n.id, DataDir: n.dir, Bootstrap: bootstrap, Join: join,
		ISCSIAddr: n.addr(portISCSI), APIAddr: n.addr(portAPI), RaftAddr: n.addr(portRaft),
		GossipAddr: n.addr(portGossip), ReplAddr: n.addr(portRepl),
		Token: simToken, ResyncRate: s.cfg.ResyncRate, Cluster: cc,
		Replication: s.replicationConfig(),
		Logger:      slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", n.id),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := agent.New(ctx, cfg, deps)
	if err != nil {
		return fail(err)
	}
	n.mu.Lock()
	n.a = a
	n.mu.Unlock()
	return nil
}

// applyFault is the cluster's ApplyFault: while the node is ambiguous,
// every replication command it gets committed reports an error anyway.
func (n *node) applyFault(cmd cluster.Command) error {
	if !n.ambiguous.Load() {
		return nil
	}
	switch cmd.Type {
	case cluster.CmdLUNSetInSync, cluster.CmdLUNSetOwner, cluster.CmdLUNSetProgress:
		n.s.count("ambiguous-apply-answered")
		return fmt.Errorf("%w (injected: the command committed)", cluster.ErrNoLeader)
	}
	return nil
}

// disk returns the disk of l on this node, creating a blank one when the
// node has none yet.
func (n *node) disk(l cluster.DesiredLUN) (d *disk, created bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	d = n.disks[l.BackingPath]
	if d == nil {
		d = &disk{Crash: blockstore.NewCrash(agent.BackingSize(l))}
		n.disks[l.BackingPath] = d
		created = true
	}
	d.writeThrough = l.LUN.IOMode == cluster.IOModeWriteThrough
	d.lun = l.LUN.LUN
	return d, created
}

func (n *node) openDisk(l cluster.DesiredLUN) (agent.Store, error) {
	d, _ := n.disk(l)
	return d, nil
}

// agent returns the running agent, or nil.
func (n *node) agent() *agent.Agent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.a
}

// stop ends the node's process. kill: as kill -9 (its sockets reset at
// once, no flush; the kernel keeps what the disks took); powerLoss: the
// machine too (every disk drops its unflushed writes). Otherwise a
// graceful stop (SIGTERM: commands drain, disks flushed).
func (n *node) stop(kill, powerLoss bool) {
	n.mu.Lock()
	a := n.a
	n.a = nil
	disks := make([]*disk, 0, len(n.disks))
	for _, d := range n.disks {
		disks = append(disks, d)
	}
	if n.paused {
		n.paused = false
		close(n.resumed)
	}
	n.mu.Unlock()
	n.clock.Resume() // a dead process has no timers left to fire
	if a == nil {
		return
	}
	net := n.s.net
	if kill || powerLoss {
		// Dead at once: cut first, so that nothing the dying process's
		// goroutines still do (a re-dial, a last Raft proposal) reaches
		// anyone, as with kill -9 nothing would.
		net.Isolate(n.id)
		net.Crash(n.id)
		a.Abort() // nothing flushed, no clean stop recorded
		if !powerLoss {
			net.Reconnect(n.id) // the kernel lives on and answers with resets
		} else {
			n.mu.Lock()
			n.dark = true // a machine without power answers nothing
			n.mu.Unlock()
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		a.Shutdown(ctx)
		cancel()
	}
	net.Crash(n.id) // release its ports for the next start
	if powerLoss {
		n.boots.Add(1)
		for _, d := range disks {
			d.Crash.Crash()
		}
	}
}

// pause freezes the node as SIGSTOP would: its network, its clock, and
// the commands sent to it (they wait, queued, until resume).
func (n *node) pause() {
	n.mu.Lock()
	if n.paused {
		n.mu.Unlock()
		return
	}
	n.paused = true
	n.resumed = make(chan struct{})
	n.mu.Unlock()
	n.clock.Pause()
	n.s.net.Pause(n.id)
}

// resume lets a paused node run again: the clock jumps, the commands
// that were queued run, then the network delivers what it held, and only
// then the node's timers (its lease poller among them) fire. After a real
// SIGCONT the order is a race: the commands already sit in their sockets
// as do the Raft messages that would tell the node it lost the LUN; the
// simulator takes the order that exposes a lease checked anywhere but on
// the IO path.
func (n *node) resume() {
	n.mu.Lock()
	if !n.paused {
		n.mu.Unlock()
		return
	}
	n.paused = false
	due := n.clock.Resume()
	close(n.resumed)
	n.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // the queued commands first
	n.s.net.Resume(n.id)
	time.Sleep(20 * time.Millisecond)
	runTimers(due)
}

// execute runs a SCSI command on the node as its iSCSI layer would: it
// waits while the node is paused (the command sits in the socket), and
// fails when no process runs or the node does not serve the target.
func (n *node) execute(iqn string, cmd *scsi.Command) (*scsi.Response, error) {
	n.mu.Lock()
	for n.paused {
		ch := n.resumed
		n.mu.Unlock()
		<-ch
		n.mu.Lock()
	}
	a := n.a
	n.mu.Unlock()
	if a == nil {
		return nil, fmt.Errorf("%s is down", n.id)
	}
	dev := a.Device(iqn)
	if dev == nil {
		return nil, fmt.Errorf("%s does not serve %s", n.id, iqn)
	}
	// The session's target port: this node's portal group, as its iSCSI
	// layer fills it in.
	tag := uint16(0)
	if ni := a.Node().FSM().State().Nodes[n.id]; ni != nil {
		tag = ni.Tag
	}
	nx := *cmd.Nexus
	nx.TargetPort = fmt.Sprintf("%s,t,0x%04x", iqn, tag)
	nx.TargetPortGroup, nx.RelativeTargetPort = tag, tag
	cmd.Nexus = &nx
	return dev.Execute(context.Background(), cmd), nil
}

func newNode(s *Sim, id string) (*node, error) {
	h, err := s.net.AddHost(id)
	if err != nil {
		return nil, err
	}
	return &node{
		s: s, id: id, host: h, clock: &pausableClock{},
		dir:   filepath.Join(s.dir, id),
		logs:  raft.NewInmemStore(),
		snaps: raft.NewInmemSnapshotStore(),
		disks: map[string]*disk{},
	}, nil
}
