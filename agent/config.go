package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
)

// Config describes one cluster node. Addresses are those the other nodes
// (and initiators, for the portal) reach this node at; without listeners in
// Deps, New listens on them over TCP.
type Config struct {
	// NodeID names the node in the cluster; stable across restarts.
	NodeID string
	// DataDir holds the Raft state, the replication state, the admin
	// socket and the default LUN files. It must be absolute.
	DataDir string
	// Bootstrap forms a new cluster with this node as its first member
	// (ignored on a restart: the node finds its cluster again).
	Bootstrap bool
	// Join is the admin API address of a member to join through (ignored
	// when this node is a member already).
	Join string

	ISCSIAddr  string
	APIAddr    string
	RaftAddr   string
	GossipAddr string
	ReplAddr   string

	// Token is the admin token (the same on every node); GossipKey the
	// gossip encryption key (16, 24 or 32 bytes), or nil.
	Token     string
	GossipKey []byte

	// ResyncRate caps resync, repair and verify reads, bytes per second
	// per LUN (0: no cap).
	ResyncRate int64

	// Cluster holds the Raft, gossip and lease timings and the cluster
	// logger; New fills in its identity, addresses, secrets and the
	// reconciler. The zero value means cluster.DefaultConfig() with a
	// 2 s reconcile interval.
	Cluster cluster.Config

	// Replication tunes the owner volumes: AckTimeout, RegionSize,
	// MaxInFlight and MaxMessage are taken from it when set (zero:
	// replication.DefaultConfig's). The node sets the rest.
	Replication replication.Config

	// Logger receives the node's own logs (nil: discarded).
	Logger *slog.Logger
}

// replicationConfig is replication.DefaultConfig with c.Replication's
// tunables.
func (c *Config) replicationConfig() replication.Config {
	rc := replication.DefaultConfig()
	if c.Replication.AckTimeout > 0 {
		rc.AckTimeout = c.Replication.AckTimeout
	}
	if c.Replication.RegionSize > 0 {
		rc.RegionSize = c.Replication.RegionSize
	}
	if c.Replication.MaxInFlight > 0 {
		rc.MaxInFlight = c.Replication.MaxInFlight
	}
	if c.Replication.MaxMessage > 0 {
		rc.MaxMessage = c.Replication.MaxMessage
	}
	return rc
}

// Deps are what a test replaces to run several nodes in one process: the
// listeners, Raft's transport and stores, gossip's transport, the dialer of
// the replication and API connections, the clock, and the LUN stores. Zero
// values mean the production ones.
type Deps struct {
	// Listeners for the iSCSI portal, the admin API and the replication
	// port; nil: New listens on the Config addresses over TCP.
	ISCSIListener net.Listener
	APIListener   net.Listener
	ReplListener  net.Listener

	// Cluster are the Raft and gossip dependencies (cluster.NewNode); nil
	// means cluster.Start's: Raft over TCP, raft-boltdb stores under
	// DataDir, memberlist over UDP and TCP.
	Cluster *cluster.Deps

	// Dial opens the connections this node makes to other nodes'
	// replication ports (nil: TCP).
	Dial replication.DialFunc

	// HTTPClient makes the admin API calls to other nodes (forwarding to
	// the leader, joining); nil: a TCP client. It goes into Cluster.
	HTTPClient *http.Client

	// Clock is the time source of the owner lease checks on the IO path
	// and of replication's timers (nil: the system clock).
	Clock replication.Clock

	// OpenStore opens the store of a LUN placed here; EnsureBacking
	// creates its backing file when missing. Nil: OpenStore and
	// EnsureBacking of this package (files and block devices). A
	// replicated LUN's store must hold BackingSize(l) bytes, the LUN's
	// and its copy's identity block (see Store): an in-memory store is
	// blockstore.NewCrash(BackingSize(l)), and one that stands for a
	// replaced disk is a new, blank one of that size.
	OpenStore     func(l cluster.DesiredLUN) (Store, error)
	EnsureBacking func(l cluster.DesiredLUN) (created bool, err error)

	// BootID returns the machine's boot ID, new at every boot (nil: the
	// kernel's, /proc/sys/kernel/random/boot_id). A node that stopped
	// without a clean shutdown and finds another boot ID suspects its
	// write-back copies (runstate.go); a simulator gives each of its
	// machines one that changes at a power loss.
	BootID func() string

	// WriteHook, if set, is called after every write (or unmap, with nil
	// data) a replicated LUN's owner volume acknowledged, with the LUN's
	// ID and the volume's epoch: a fault simulator checks with it that two
	// epochs never take writes at once. It must not block.
	WriteHook func(lunID, epoch uint64, off int64, data []byte)
}

// Validate checks the configuration before anything is opened.
func (c *Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("agent: node ID is required")
	case c.DataDir == "" || !filepath.IsAbs(c.DataDir):
		return fmt.Errorf("agent: data dir %q must be an absolute path", c.DataDir)
	case c.Bootstrap && c.Join != "":
		return errors.New("agent: use either bootstrap (a new cluster) or join (an existing one), not both")
	case c.ResyncRate < 0:
		return fmt.Errorf("agent: resync rate %d must not be negative", c.ResyncRate)
	}
	if err := c.replicationConfig().Validate(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	for _, a := range []struct{ name, v string }{
		{"iSCSI", c.ISCSIAddr}, {"API", c.APIAddr}, {"Raft", c.RaftAddr}, {"gossip", c.GossipAddr}, {"replication", c.ReplAddr},
	} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("agent: %s address %q: want HOST:PORT", a.name, a.v)
		}
	}
	return nil
}

// clusterConfig is c.Cluster with this node's identity filled in.
func (c *Config) clusterConfig() cluster.Config {
	cc := c.Cluster
	if cc.HeartbeatTimeout == 0 {
		log := cc.Logger
		cc = cluster.DefaultConfig()
		cc.Logger = log
		// Retry a failed reconcile (a file that could not be created, a
		// node not registered yet) soon.
		cc.ReconcileInterval = 2 * time.Second
	}
	cc.NodeID, cc.DataDir = c.NodeID, c.DataDir
	cc.RaftAddr, cc.GossipAddr, cc.APIAddr = c.RaftAddr, c.GossipAddr, c.APIAddr
	cc.ISCSIPortal, cc.ReplicationAddr = c.ISCSIAddr, c.ReplAddr
	cc.GossipKey, cc.Token, cc.Bootstrap = c.GossipKey, c.Token, c.Bootstrap
	return cc
}
