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
	// copies are the nodes' copies with their identity block over
	// stores (newIdentityCluster); nil: the stores hold the LUN alone.
	copies map[NodeID]*CopyStore
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

// newIdentityCluster is newTestCluster with copy identities: each node's
// copy is a CopyStore over its memory store (the LUN plus the identity
// block), and the view is a fresh LUN's (Fresh, no generation recorded
// yet): the first owner's Open gives every copy its generation.
func newIdentityCluster(t testing.TB, size int64, nodes ...NodeID) *testCluster {
	c := &testCluster{t: t, net: NewInmemNetwork(), coord: NewMemCoordinator(), size: size, nodes: nodes,
		stores: map[NodeID]*blockstore.Memory{}, mirrors: map[NodeID]*Mirror{}, copies: map[NodeID]*CopyStore{}}
	for _, n := range nodes {
		c.startNode(n, blockstore.NewMemory(size+IdentitySize), 0)
	}
	c.coord.SetView(testLUN, View{Epoch: 1, Owner: nodes[0], Replicas: slices.Clone(nodes), InSync: slices.Clone(nodes),
		Gens: map[NodeID]Generation{}, Fresh: true})
	return c
}

// startNode (re)starts node n of an identity cluster over raw: a new
// Mirror serving the copy in raw, fenced at epoch. Connections of the
// node's previous incarnation are broken, as a restarted process's are.
func (c *testCluster) startNode(n NodeID, raw *blockstore.Memory, epoch uint64) {
	c.t.Helper()
	cs, err := NewCopyStore(raw, testLUN, c.size)
	if err != nil {
		c.t.Fatal(err)
	}
	m := NewMirror(nil)
	m.AddLUN(testLUN, cs, epoch)
	c.stores[n], c.copies[n], c.mirrors[n] = raw, cs, m
	c.net.Register(n, m.Handle)
	for _, o := range c.nodes {
		if o != n {
			c.net.Disconnect(n, o)
		}
	}
}

// store is node n's store as a Volume on n serves it.
func (c *testCluster) store(n NodeID) Store {
	if c.copies != nil {
		return c.copies[n]
	}
	return c.stores[n]
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
	v, err := c.tryOpen(node, cfg, coord)
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

// tryOpen is open returning Open's error (the volume is closed then).
func (c *testCluster) tryOpen(node NodeID, cfg Config, coord Coordinator) (*Volume, error) {
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
	v, err := NewVolume(cfg, testLUN, node, c.store(node), coord, c.net.Transport(node))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := v.Open(context.Background()); err != nil {
		v.Close()
		return nil, err
	}
	c.t.Cleanup(func() { v.Close() })
	return v, nil
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
