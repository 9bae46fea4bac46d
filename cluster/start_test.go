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
