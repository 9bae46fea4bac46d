package cluster

import (
	"encoding/base64"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config configures one cluster node. Build it from DefaultConfig and check
// it with Validate; Start and NewNode validate it again.
type Config struct {
	// NodeID names the node in Raft, memberlist and the state machine. It
	// must be unique in the cluster and stable across restarts.
	NodeID string
	// DataDir holds raft/ (log, stable store, snapshots) and hatgt.sock.
	DataDir string

	// RaftAddr is the TCP address Raft binds and advertises (IP:port): an
	// address the other nodes reach, not 0.0.0.0.
	RaftAddr string
	// GossipAddr is the memberlist bind address (host:port, TCP and UDP).
	GossipAddr string
	// APIAddr is the address where this node's admin API is reachable by
	// the other nodes (not 0.0.0.0); followers forward changes to the
	// leader's APIAddr.
	APIAddr string
	// ISCSIPortal is the node's iSCSI portal (IP:port), published in
	// memberlist metadata and the state machine.
	ISCSIPortal string
	// ReplicationAddr is where this node accepts replication streams.
	ReplicationAddr string

	// GossipKey, when set, encrypts memberlist traffic (16, 24 or 32 bytes,
	// AES-128/192/256). Every node needs the same key.
	GossipKey []byte
	// Token is the shared admin token. Mutating API calls and forwarded
	// commands must carry it. Empty means no token: the API must then stay
	// on loopback (enforced by the serve command, not here).
	Token string

	// Bootstrap makes this node form a new single-voter cluster when it has
	// no Raft state yet. Set it on exactly one node of a new cluster.
	Bootstrap bool

	// Raft timing. LeaderLeaseTimeout <= HeartbeatTimeout <= ElectionTimeout.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// OwnerLease is how long a LUN owner may keep serving after its last
	// contact with a Raft leader; the leader moves the ownership of a dead
	// owner's LUNs only after a longer wait (FailoverDelay). It must exceed
	// HeartbeatTimeout, so that a healthy follower, which hears from the
	// leader many times per heartbeat timeout, never loses it. See lease.go.
	OwnerLease time.Duration
	// SnapshotThreshold is the number of log entries between snapshots.
	SnapshotThreshold uint64
	// SnapshotRetain is how many snapshots the file store keeps.
	SnapshotRetain int

	// Gossip timing (memberlist). GossipProbeTimeout < GossipProbeInterval.
	GossipProbeInterval time.Duration
	GossipProbeTimeout  time.Duration
	GossipSuspicionMult int

	// ApplyTimeout bounds how long a change waits for a leader and for its
	// commit; past it the caller gets ErrNoLeader with how many voters were
	// reachable. It must exceed ElectionTimeout so that an election can
	// finish inside it.
	ApplyTimeout time.Duration
	// ReconcileInterval is how often the reconciler runs even without a
	// state change (to retry failures).
	ReconcileInterval time.Duration

	// Logger receives all cluster logs (Raft and memberlist included).
	// Nil means hclog.NewNullLogger().
	Logger hclog.Logger
	// Reconciler, if set, is called with this node's desired state after
	// every change; see Reconciler.
	Reconciler Reconciler
	// Release, if set, stops and resumes the serving of the LUNs this
	// node owns: a leave stops them before it hands them over (see
	// OwnerRelease, Node.Leave).
	Release OwnerRelease
	// Preparer, if set, prepares this node's copy of a new LUN before the
	// leader commits it; see Preparer. Nil: nothing is checked here.
	Preparer Preparer
}

// DefaultConfig returns a Config with LAN timings and no addresses.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout: 500 * time.Millisecond,
		ElectionTimeout:  500 * time.Millisecond,
		// A leader steps down only when a follower would call an
		// election anyway: earlier, a stall of the leader alone (a
		// starved CPU, a Raft fsync behind a writeback flood) makes a
		// leaderless gap no one needed, and a leader that owns LUNs
		// loses its owner lease in it. 250 ms did that in CI: an
		// owner-leader missed its quorum for 292 ms, stepped down, was
		// elected again 0.9 s later, and its LUN answered
		// "transitioning" meanwhile. The lease argument (lease.go)
		// needs only LeaderLeaseTimeout <= ElectionTimeout.
		LeaderLeaseTimeout:  500 * time.Millisecond,
		CommitTimeout:       50 * time.Millisecond,
		OwnerLease:          time.Second,
		SnapshotThreshold:   8192,
		SnapshotRetain:      2,
		GossipProbeInterval: 500 * time.Millisecond,
		GossipProbeTimeout:  250 * time.Millisecond,
		GossipSuspicionMult: 3,
		ApplyTimeout:        5 * time.Second,
		ReconcileInterval:   10 * time.Second,
	}
}

// FailoverDelay is how long the leader must have seen a LUN's owner dead
// (and out of Raft contact) before it gives the LUN to another node: the
// owner lease, plus half of it for the owner's periodic lease check and
// clock rate differences, plus an election timeout for the last heartbeats
// of a leader that was deposed without knowing it. lease.go says why.
func (c *Config) FailoverDelay() time.Duration {
	return c.OwnerLease + c.OwnerLease/2 + c.ElectionTimeout
}

// ParseGossipKey decodes a gossip encryption key given as base64 (standard
// or URL alphabet) of 16, 24 or 32 bytes, as "openssl rand -base64 32"
// prints. The error never repeats the key.
func ParseGossipKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			switch len(b) {
			case 16, 24, 32:
				return b, nil
			}
			return nil, fmt.Errorf("cluster: gossip key decodes to %d bytes, want 16, 24 or 32", len(b))
		}
	}
	return nil, fmt.Errorf("cluster: gossip key is not base64")
}

var nodeIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate checks each field and the timing relations between them.
func (c *Config) Validate() error {
	if !nodeIDRe.MatchString(c.NodeID) {
		return fmt.Errorf("cluster: node id %q: want 1-63 of [A-Za-z0-9._-], starting alphanumeric", c.NodeID)
	}
	if c.DataDir == "" {
		return fmt.Errorf("cluster: data dir is required")
	}
	for _, a := range []struct{ name, v string }{
		{"raft address", c.RaftAddr}, {"gossip address", c.GossipAddr}, {"API address", c.APIAddr},
	} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("cluster: %s %q: %v", a.name, a.v, err)
		}
	}
	for _, a := range []struct{ name, v string }{
		{"raft address", c.RaftAddr}, {"API address", c.APIAddr},
	} {
		host, _, _ := net.SplitHostPort(a.v)
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return fmt.Errorf("cluster: %s %q must be one the other nodes can reach, not a wildcard", a.name, a.v)
		}
	}
	for _, a := range []struct{ name, v string }{
		{"iSCSI portal", c.ISCSIPortal}, {"replication address", c.ReplicationAddr},
	} {
		if a.v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("cluster: %s %q: %v", a.name, a.v, err)
		}
	}
	switch len(c.GossipKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("cluster: gossip key must be 16, 24 or 32 bytes, got %d", len(c.GossipKey))
	}
	return c.validateTiming()
}

func (c *Config) validateTiming() error {
	switch {
	case c.HeartbeatTimeout < 5*time.Millisecond:
		return fmt.Errorf("cluster: heartbeat timeout %v is below 5ms", c.HeartbeatTimeout)
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return fmt.Errorf("cluster: election timeout %v must be >= heartbeat timeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	case c.LeaderLeaseTimeout <= 0 || c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return fmt.Errorf("cluster: leader lease timeout %v must be in (0, heartbeat timeout %v]", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	case c.CommitTimeout <= 0:
		return fmt.Errorf("cluster: commit timeout must be positive")
	case c.OwnerLease <= 0:
		return fmt.Errorf("cluster: owner lease must be positive (default %v)", DefaultConfig().OwnerLease)
	case c.OwnerLease <= c.HeartbeatTimeout:
		return fmt.Errorf("cluster: owner lease %v must be longer than the heartbeat timeout %v: raise the owner lease or lower the heartbeat timeout", c.OwnerLease, c.HeartbeatTimeout)
	case c.SnapshotThreshold == 0 || c.SnapshotRetain < 1:
		return fmt.Errorf("cluster: snapshot threshold and retain must be positive")
	case c.GossipProbeInterval <= 0 || c.GossipProbeTimeout <= 0 || c.GossipProbeTimeout >= c.GossipProbeInterval:
		return fmt.Errorf("cluster: gossip probe timeout %v must be positive and below the probe interval %v", c.GossipProbeTimeout, c.GossipProbeInterval)
	case c.GossipSuspicionMult < 1:
		return fmt.Errorf("cluster: gossip suspicion multiplier must be >= 1")
	case c.ApplyTimeout <= c.ElectionTimeout:
		return fmt.Errorf("cluster: apply timeout %v must exceed the election timeout %v", c.ApplyTimeout, c.ElectionTimeout)
	case c.ReconcileInterval <= 0:
		return fmt.Errorf("cluster: reconcile interval must be positive")
	}
	return nil
}
