package replication

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/hatgt/hatgt/blockstore"
)

// tcpCluster serves each node's Mirror on a loopback listener.
type tcpCluster struct {
	*testCluster
	addrs map[NodeID]string
}

func newTCPCluster(t testing.TB, size int64, nodes ...NodeID) *tcpCluster {
	c := &tcpCluster{testCluster: newTestCluster(t, size, nodes...), addrs: map[NodeID]string{}}
	for _, n := range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := NewTCPServer(c.mirrors[n].Handle, nil)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		c.addrs[n] = ln.Addr().String()
	}
	return c
}

func (c *tcpCluster) transport() Transport {
	return NewTCPTransport(func(n NodeID) (string, error) {
		a, ok := c.addrs[n]
		if !ok {
			return "", fmt.Errorf("no address for %s", n)
		}
		return a, nil
	}, nil)
}

func (c *tcpCluster) openTCP(node NodeID, cfg Config) *Volume {
	c.t.Helper()
	v, err := NewVolume(cfg, testLUN, node, c.stores[node], c.coord, c.transport())
	if err != nil {
		c.t.Fatal(err)
	}
	if err := v.Open(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { v.Close() })
	return v
}

func TestTCPReplication(t *testing.T) {
	c := newTCPCluster(t, 1<<20, "a", "b", "c")
	v := c.openTCP("a", testConfig())
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				seed := uint64(w*100 + i)
				if _, err := v.WriteAt(pattern(seed, 4096*int(1+seed%20)), int64(seed*13%150)*4096); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	c.identical("a", "b", "c")
	rep, err := v.Verify(context.Background(), "b")
	if err != nil || len(rep.Divergent) != 0 || rep.Regions != 16 {
		t.Fatalf("verify over TCP: %+v %v", rep, err)
	}
}

// A mirror whose server goes away is dropped; the connection error, not a
// timeout, reports it.
func TestTCPMirrorGoneIsDropped(t *testing.T) {
	c := newTCPCluster(t, 1<<20, "a", "b")
	v := c.openTCP("a", testConfig())
	c.addrs["b"] = "127.0.0.1:1" // nothing listens: redials fail
	v.mu.Lock()
	v.peers["b"].conn.Close()
	v.mu.Unlock()
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("b") {
		t.Fatal("unreachable mirror still in sync")
	}
}

// The server drops a connection that sends a corrupt frame, and answers a
// well-formed one on a fresh connection.
func TestTCPServerDropsBadFrame(t *testing.T) {
	c := newTCPCluster(t, 65536, "a")
	nc, err := net.Dial("tcp", c.addrs["a"])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	frame := AppendMessage(nil, &Message{Type: MsgHello, LUN: testLUN, Epoch: 1})
	frame[30] ^= 0xff // header checksum now wrong
	nc.Write(frame)
	if _, err := ReadMessage(bufio.NewReader(nc), 0); err == nil {
		t.Fatal("got a reply to a corrupt frame")
	}
	conn, err := c.transport().Dial(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan *Message, 1)
	conn.Send(&Message{Type: MsgHello, LUN: testLUN, Epoch: 1}, func(m *Message, err error) {
		if err != nil {
			t.Error(err)
		}
		got <- m
	})
	if m := <-got; m == nil || m.Status != StatusOK {
		t.Fatalf("hello on a good connection: %+v", m)
	}
	conn.Close()
	failed := make(chan error, 1)
	conn.Send(&Message{Type: MsgHello, LUN: testLUN}, func(_ *Message, err error) { failed <- err })
	if err := <-failed; !errors.Is(err, ErrClosed) {
		t.Fatalf("send on a closed conn: %v", err)
	}
}

// Pipelining: replies are matched to requests by id, whatever the order of
// Send calls and callbacks.
func TestTCPPipelinedReplies(t *testing.T) {
	c := newTCPCluster(t, 1<<20, "a")
	conn, err := c.transport().Dial(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 200
	var mu sync.Mutex
	var offs []int64
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		conn.Send(&Message{Type: MsgVerify, LUN: testLUN, Epoch: 1, Offset: int64(i) * 4096, Length: 4096}, func(m *Message, err error) {
			defer wg.Done()
			if err != nil || m.Status != StatusOK || len(m.Payload) != 32 {
				t.Errorf("reply %d: %+v %v", i, m, err)
				return
			}
			mu.Lock()
			offs = append(offs, m.Offset)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(offs)
	for i, o := range offs {
		if o != int64(i)*4096 {
			t.Fatalf("reply offsets %v...", offs[:i+1])
		}
	}
}

func benchWrites(b *testing.B, size int, replicated bool) {
	const vol = 64 << 20
	var w interface {
		WriteAt([]byte, int64) (int, error)
	}
	if replicated {
		c := newTCPCluster(b, vol, "a", "b")
		cfg := DefaultConfig()
		w = c.openTCP("a", cfg)
	} else {
		w = blockstore.NewMemory(vol)
	}
	buf := pattern(1, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int64(0)
		for pb.Next() {
			off := (i * int64(size)) % (vol - int64(size))
			off -= off % int64(size)
			if _, err := w.WriteAt(buf, off); err != nil {
				b.Error(err)
				return
			}
			i += 7
		}
	})
}

// Replicated (owner + one mirror over loopback TCP) against local writes.
func BenchmarkLocalWrite4K(b *testing.B)      { benchWrites(b, 4096, false) }
func BenchmarkReplicatedWrite4K(b *testing.B) { benchWrites(b, 4096, true) }
func BenchmarkLocalWrite1M(b *testing.B)      { benchWrites(b, 1<<20, false) }
func BenchmarkReplicatedWrite1M(b *testing.B) { benchWrites(b, 1<<20, true) }
