package replication

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hatgt/hatgt/blockstore"
)

const testLUN LUNID = 1

// testCluster is a set of nodes in one process: each has a memory store
// and a Mirror registered on an in-memory network, and a MemCoordinator
// plays Raft.
type testCluster struct {
	t       testing.TB
	net     *InmemNetwork
	coord   *MemCoordinator
	size    int64
	nodes   []NodeID
	stores  map[NodeID]*blockstore.Memory
	mirrors map[NodeID]*Mirror
}

// newTestCluster makes nodes, all replicas and in sync, nodes[0] the owner
// in epoch 1.
func newTestCluster(t testing.TB, size int64, nodes ...NodeID) *testCluster {
	c := &testCluster{t: t, net: NewInmemNetwork(), coord: NewMemCoordinator(), size: size, nodes: nodes,
		stores: map[NodeID]*blockstore.Memory{}, mirrors: map[NodeID]*Mirror{}}
	for _, n := range nodes {
		c.addNode(n)
	}
	c.coord.SetView(testLUN, View{Epoch: 1, Owner: nodes[0], Replicas: slices.Clone(nodes), InSync: slices.Clone(nodes)})
	return c
}

func (c *testCluster) addNode(n NodeID) {
	st := blockstore.NewMemory(c.size)
	m := NewMirror(nil)
	m.AddLUN(testLUN, st, 0)
	c.stores[n] = st
	c.mirrors[n] = m
	c.net.Register(n, m.Handle)
}

func testConfig() Config {
	cfg := DefaultConfig()
	// Long: a loaded test machine must not drop mirrors by accident.
	// Tests of a silent mirror drive the timeout with a ManualClock;
	// others cut the link (cut), which fails requests at once.
	cfg.AckTimeout = 10 * time.Second
	cfg.RegionSize = 64 << 10
	cfg.ResyncRate = 0
	cfg.MaxMessage = 32 << 10
	return cfg
}

// open opens the owner side on node with cfg (zero: testConfig).
func (c *testCluster) open(node NodeID, cfg Config, coord Coordinator) *Volume {
	c.t.Helper()
	if cfg.AckTimeout == 0 {
		cfg = testConfig()
	}
	if coord == nil {
		coord = c.coord
	}
	if cfg.LocalMirror == nil {
		cfg.LocalMirror = c.mirrors[node]
	}
	v, err := NewVolume(cfg, testLUN, node, c.stores[node], coord, c.net.Transport(node))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := v.Open(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { v.Close() })
	return v
}

func (c *testCluster) view() View {
	v, err := c.coord.View(context.Background(), testLUN)
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

func (c *testCluster) read(n NodeID, off, length int64) []byte {
	b := make([]byte, length)
	if _, err := c.stores[n].ReadAt(b, off); err != nil {
		c.t.Fatal(err)
	}
	return b
}

// identical fails the test unless every listed copy equals the first.
func (c *testCluster) identical(nodes ...NodeID) {
	c.t.Helper()
	ref := c.read(nodes[0], 0, c.size)
	for _, n := range nodes[1:] {
		got := c.read(n, 0, c.size)
		if !bytes.Equal(ref, got) {
			i := 0
			for i < len(ref) && ref[i] == got[i] {
				i++
			}
			c.t.Fatalf("copy on %s differs from %s first at byte %d (view %+v)", n, nodes[0], i, c.view())
		}
	}
}

func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// silentCoord is a coordinator cut off from Raft's commits: it never
// delivers a view change, so only the mirrors can tell its owner it was
// deposed.
type silentCoord struct{ Coordinator }

func (silentCoord) Watch(LUNID, func(View)) func() { return func() {} }

func indexOf(events []string, prefix string) int {
	for i, e := range events {
		if len(e) >= len(prefix) && e[:len(prefix)] == prefix {
			return i
		}
	}
	return -1
}

func lastIndexOf(events []string, prefix string) int {
	for i := len(events) - 1; i >= 0; i-- {
		if strings.HasPrefix(events[i], prefix) {
			return i
		}
	}
	return -1
}

// cut partitions a from b and breaks their connections, so requests in
// flight fail at once (a lost connection) and later ones vanish.
func (c *testCluster) cut(a, b NodeID) {
	c.net.Partition(a, b)
	c.net.Disconnect(a, b)
}
