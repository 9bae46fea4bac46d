package cluster

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestStartPersists runs the production wiring (TCP transport, raft-boltdb,
// file snapshots, memberlist with an encryption key) on loopback and checks
// that a restarted node comes back with its state from disk.
func TestStartPersists(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("solo")
	cfg.DataDir = dir
	cfg.RaftAddr, cfg.GossipAddr, cfg.APIAddr = freePort(t), freePort(t), freePort(t)
	cfg.GossipKey = []byte("0123456789abcdef")
	cfg.Bootstrap = true
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: &logSink{t: t}})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := NewCommand(CmdTargetCreate, TargetCreate{IQN: iqnA})
	if _, err := n.Apply(ctx, cmd); err != nil {
		n.Shutdown()
		t.Fatal(err)
	}
	if err := n.Raft().Snapshot().Error(); err != nil {
		t.Error(err)
	}
	cmd, _ = NewCommand(CmdTargetCreate, TargetCreate{IQN: iqnB})
	if _, err := n.Apply(ctx, cmd); err != nil {
		t.Error(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"raft/raft.db", "raft/snapshots"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("missing %s: %v", p, err)
		}
	}

	n, err = Start(ctx, cfg) // Bootstrap again is a no-op on existing state
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	deadline := time.Now().Add(15 * time.Second)
	for {
		s := n.FSM().State()
		if s.Targets[iqnA] != nil && s.Targets[iqnB] != nil && s.Nodes["solo"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state after restart: %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStartJoinEncryptedGossip joins a second node over real TCP and
// encrypted gossip, and refuses a third whose gossip key differs before it
// becomes a voter.
func TestStartJoinEncryptedGossip(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := func(id string, boot bool, k []byte) *Node {
		cfg := testConfig(id)
		cfg.DataDir = t.TempDir()
		cfg.RaftAddr, cfg.GossipAddr, cfg.APIAddr = freePort(t), freePort(t), freePort(t)
		cfg.GossipKey, cfg.Bootstrap = k, boot
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: &logSink{t: t}})
		n, err := Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", cfg.APIAddr)
		if err != nil {
			t.Fatal(err)
		}
		sctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { NewAPI(n).Serve(sctx, ln); close(done) }()
		t.Cleanup(func() { stop(); <-done; n.Shutdown() })
		return n
	}
	n1 := start("j1", true, key)
	waitUntil(t, "j1 leads and is registered", func() bool {
		_, ok := n1.FSM().State().Nodes["j1"]
		return n1.IsLeader() && ok
	})
	n2 := start("j2", false, key)
	if err := n2.JoinVia(ctx, n1.cfg.APIAddr); err != nil {
		t.Fatalf("join with the right key: %v", err)
	}
	waitUntil(t, "j2 alive on j1", func() bool {
		for _, ns := range n1.Status().Nodes {
			if ns.ID == "j2" {
				return ns.Alive && ns.Health == HealthAlive && ns.Voter
			}
		}
		return false
	})
	n3 := start("j3", false, []byte("fedcba9876543210fedcba9876543210"))
	err := n3.JoinVia(ctx, n1.cfg.APIAddr)
	if err == nil {
		t.Fatal("join with a different gossip key succeeded")
	}
	t.Logf("refused as expected: %v", err)
	if got := len(n1.voters()); got != 2 {
		t.Errorf("%d voters after a refused join, want 2", got)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
