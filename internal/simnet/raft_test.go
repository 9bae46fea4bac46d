package simnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// logFSM records the entries it applies.
type logFSM struct {
	mu      sync.Mutex
	entries []string
}

func (f *logFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, string(l.Data))
	return nil
}

func (f *logFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return logSnapshot(slices.Clone(f.entries)), nil
}

func (f *logFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var e []string
	if err := json.NewDecoder(rc).Decode(&e); err != nil {
		return err
	}
	f.mu.Lock()
	f.entries = e
	f.mu.Unlock()
	return nil
}

func (f *logFSM) get() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries)
}

type logSnapshot []string

func (s logSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (logSnapshot) Release() {}

type raftNode struct {
	name string
	r    *raft.Raft
	fsm  *logFSM
}

// Three hashicorp/raft servers over simnet: a leader cut off by Isolate
// loses its leadership and cannot commit, the other two elect a leader and
// commit, and after the heal the three logs converge, without the old
// leader's uncommitted entry.
func TestRaftOverSimnet(t *testing.T) {
	names := []string{"n1", "n2", "n3"}
	n, hs := newNet(t, Config{}, names...)
	logw := newTestLog(t)
	var servers []raft.Server
	layers := map[string]*RaftLayer{}
	for _, name := range names {
		l, err := hs[name].RaftLayer(":7000")
		if err != nil {
			t.Fatal(err)
		}
		layers[name] = l
		servers = append(servers, raft.Server{ID: raft.ServerID(name), Address: raft.ServerAddress(l.Addr().String())})
	}
	nodes := map[string]*raftNode{}
	for _, name := range names {
		cfg := raft.DefaultConfig()
		cfg.LocalID = raft.ServerID(name)
		cfg.HeartbeatTimeout = 200 * time.Millisecond
		cfg.ElectionTimeout = 200 * time.Millisecond
		cfg.LeaderLeaseTimeout = 100 * time.Millisecond
		cfg.CommitTimeout = 10 * time.Millisecond
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: logw})
		trans := raft.NewNetworkTransport(layers[name], 3, 500*time.Millisecond, logw)
		store := raft.NewInmemStore()
		fsm := &logFSM{}
		r, err := raft.NewRaft(cfg, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatal(err)
		}
		nodes[name] = &raftNode{name: name, r: r, fsm: fsm}
		t.Cleanup(func() {
			r.Shutdown().Error()
			trans.Close()
		})
	}
	if err := nodes["n1"].r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}

	leader := waitLeader(t, nodes, "")
	apply(t, leader, "a1", "a2", "a3")
	waitLogs(t, nodes, []string{"a1", "a2", "a3"}, names...)

	// Cut the leader off: it cannot commit, the others elect a leader.
	old := leader
	if err := n.Isolate(old.name); err != nil {
		t.Fatal(err)
	}
	lost := old.r.Apply([]byte("lost"), 0)
	newLeader := waitLeader(t, nodes, old.name)
	if err := lost.Error(); err == nil {
		t.Fatal("the cut-off leader committed an entry")
	} else if !errors.Is(err, raft.ErrLeadershipLost) && !errors.Is(err, raft.ErrNotLeader) {
		t.Logf("the cut-off leader's apply failed with %v", err)
	}
	if st := old.r.State(); st == raft.Leader {
		t.Fatalf("the cut-off node is still leader")
	}
	apply(t, newLeader, "b1", "b2")
	others := slices.DeleteFunc(slices.Clone(names), func(s string) bool { return s == old.name })
	want := []string{"a1", "a2", "a3", "b1", "b2"}
	waitLogs(t, nodes, want, others...)
	if got := old.fsm.get(); len(got) != 3 {
		t.Fatalf("the cut-off node applied %q while cut off", got)
	}

	// Heal: one leader, the old one follows, the three logs converge.
	if err := n.Reconnect(old.name); err != nil {
		t.Fatal(err)
	}
	waitLogs(t, nodes, want, old.name)
	leader = waitLeader(t, nodes, "")
	apply(t, leader, "c1")
	waitLogs(t, nodes, append(want, "c1"), names...)
	st := n.Stats()
	t.Logf("network: %d dials (%d failed), %d bytes delivered, %d held now", st.Dials, st.DialsFailed, st.BytesDelivered, st.BytesHeld)
}

// waitLeader waits for exactly one leader among the nodes other than
// skip, and returns it.
func waitLeader(t *testing.T, nodes map[string]*raftNode, skip string) *raftNode {
	t.Helper()
	var leader *raftNode
	eventually(t, "one leader", func() bool {
		leader = nil
		for name, nd := range nodes {
			if name == skip || nd.r.State() != raft.Leader {
				continue
			}
			if leader != nil {
				return false
			}
			leader = nd
		}
		return leader != nil
	})
	return leader
}

func apply(t *testing.T, nd *raftNode, entries ...string) {
	t.Helper()
	for _, e := range entries {
		if err := nd.r.Apply([]byte(e), 5*time.Second).Error(); err != nil {
			t.Fatalf("apply %q on %s: %v", e, nd.name, err)
		}
	}
}

func waitLogs(t *testing.T, nodes map[string]*raftNode, want []string, names ...string) {
	t.Helper()
	for _, name := range names {
		eventually(t, fmt.Sprintf("%s to apply %q", name, want), func() bool {
			return slices.Equal(nodes[name].fsm.get(), want)
		})
	}
}
