package simnet

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// Bytes arrive whole and in order in both directions at once, through
// windows much smaller than the data, with writes and reads of random
// sizes.
func TestStreamOrderFullDuplex(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		remote bool
	}{
		{"tiny windows", Config{Window: 7, SendBuffer: 5}, true},
		{"small windows", Config{Window: 1000, SendBuffer: 300}, true},
		{"defaults", Config{}, true},
		{"loopback", Config{Window: 64, SendBuffer: 64}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, hs := newNet(t, tc.cfg, "a", "b")
			peer := hs["b"]
			if !tc.remote {
				peer = hs["a"]
			}
			c, s := connPair(t, hs["a"], peer)
			var wg sync.WaitGroup
			for i, pair := range [][2]net.Conn{{c, s}, {s, c}} {
				data := make([]byte, 300_000)
				r := rand.New(rand.NewPCG(uint64(i), 1))
				for j := range data {
					data[j] = byte(r.Uint32())
				}
				wg.Add(2)
				go func() {
					defer wg.Done()
					for off := 0; off < len(data); {
						k := min(1+r.IntN(5000), len(data)-off)
						if m, err := pair[0].Write(data[off : off+k]); err != nil || m != k {
							t.Errorf("write: %d of %d, %v", m, k, err)
							return
						}
						off += k
					}
					pair[0].(*Conn).CloseWrite()
				}()
				go func() {
					defer wg.Done()
					var got bytes.Buffer
					buf := make([]byte, 7000)
					r := rand.New(rand.NewPCG(uint64(i), 2))
					for {
						k, err := pair[1].Read(buf[:1+r.IntN(len(buf)-1)])
						got.Write(buf[:k])
						if err == io.EOF {
							break
						}
						if err != nil {
							t.Errorf("read: %v", err)
							return
						}
					}
					if !bytes.Equal(got.Bytes(), data) {
						t.Errorf("direction %d: got %d bytes, want %d, or not the same", i, got.Len(), len(data))
					}
				}()
			}
			wg.Wait()
		})
	}
}

// A writer whose reader does not read fills the reader's window and its
// own send buffer, then blocks: its deadline ends the write with exactly
// that much taken. Reading lets the rest through.
func TestBackPressure(t *testing.T) {
	for _, tc := range []struct{ window, send int }{{1024, 1024}, {4096, 100}, {1, 1}} {
		_, hs := newNet(t, Config{Window: tc.window, SendBuffer: tc.send}, "a", "b")
		c, s := connPair(t, hs["a"], hs["b"])
		data := bytes.Repeat([]byte("0123456789"), 1000)
		k, err := writeBlocked(t, c, data, tc.window+tc.send)
		if !isTimeout(err) || k != tc.window+tc.send {
			t.Fatalf("window %d, send buffer %d: write took %d, %v; want %d and a timeout", tc.window, tc.send, k, err, tc.window+tc.send)
		}
		done := make(chan error, 1)
		go func() {
			_, err := c.Write(data[k:])
			done <- err
		}()
		got := make([]byte, len(data))
		if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %v; equal %v", err, bytes.Equal(got, data))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestDeadlines(t *testing.T) {
	_, hs := newNet(t, Config{Window: 10, SendBuffer: 10}, "a", "b")
	c, s := connPair(t, hs["a"], hs["b"])

	t.Run("read deadline passed", func(t *testing.T) {
		write(t, c, "x")
		eventually(t, "delivery", func() bool { return hs["a"].n.Stats().BytesDelivered >= 1 })
		s.SetReadDeadline(time.Now().Add(-time.Second))
		if _, err := s.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("read past its deadline: %v, want a timeout even with data there", err)
		}
		s.SetReadDeadline(time.Time{})
		readN(t, s, "x")
	})
	t.Run("read deadline while waiting", func(t *testing.T) {
		readTimeout(t, s)
	})
	t.Run("deadline moved while blocked", func(t *testing.T) {
		done := make(chan error, 1)
		go func() {
			_, err := s.Read(make([]byte, 1))
			done <- err
		}()
		eventually(t, "the read to wait", func() bool { return waiting(s.in) })
		s.SetReadDeadline(time.Now())
		if err := <-done; !isTimeout(err) {
			t.Fatalf("blocked read after SetReadDeadline(now): %v, want a timeout", err)
		}
		s.SetReadDeadline(time.Time{})
	})
	t.Run("write deadline", func(t *testing.T) {
		k, err := writeBlocked(t, c, make([]byte, 100), 20)
		if !isTimeout(err) || k != 20 {
			t.Fatalf("write: %d, %v; want 20 taken and a timeout", k, err)
		}
		c.SetWriteDeadline(time.Now().Add(-time.Second))
		if k, err := c.Write([]byte("x")); !isTimeout(err) || k != 0 {
			t.Fatalf("write past its deadline: %d, %v; want a timeout", k, err)
		}
		c.SetDeadline(time.Time{})
		if _, err := io.ReadFull(s, make([]byte, 20)); err != nil {
			t.Fatal(err)
		}
	})
}

// waiting reports whether a goroutine waits on p.
func waiting(p *pipe) bool {
	n := p.src.n
	n.mu.Lock()
	defer n.mu.Unlock()
	return p.sig.c != nil
}

func TestClose(t *testing.T) {
	_, hs := newNet(t, Config{}, "a", "b")
	t.Run("peer reads the data then EOF", func(t *testing.T) {
		c, s := connPair(t, hs["a"], hs["b"])
		write(t, c, "bye")
		c.Close()
		readN(t, s, "bye")
		if _, err := s.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read after the peer closed: %v, want EOF", err)
		}
	})
	t.Run("writing to a closed peer is reset", func(t *testing.T) {
		c, s := connPair(t, hs["a"], hs["b"])
		s.Close()
		if _, err := c.Write([]byte("x")); !isReset(err) {
			t.Fatalf("write to a closed peer: %v, want ECONNRESET", err)
		}
		if _, err := c.Read(make([]byte, 1)); !isReset(err) {
			t.Fatalf("read after the reset: %v, want ECONNRESET", err)
		}
	})
	t.Run("own end closed", func(t *testing.T) {
		c, _ := connPair(t, hs["a"], hs["b"])
		c.Close()
		for name, err := range map[string]error{
			"read":  second(c.Read(make([]byte, 1))),
			"write": second(c.Write([]byte("x"))),
			"close": c.Close(),
		} {
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s on a closed conn: %v, want net.ErrClosed", name, err)
			}
		}
	})
	t.Run("half close", func(t *testing.T) {
		c, s := connPair(t, hs["a"], hs["b"])
		write(t, c, "req")
		c.CloseWrite()
		b, err := io.ReadAll(s)
		if err != nil || string(b) != "req" {
			t.Fatalf("read %q, %v", b, err)
		}
		write(t, s, "resp")
		readN(t, c, "resp")
		if _, err := c.Write([]byte("x")); err == nil {
			t.Fatal("write after CloseWrite succeeded")
		}
	})
	t.Run("close wakes a blocked read", func(t *testing.T) {
		c, s := connPair(t, hs["a"], hs["b"])
		done := make(chan error, 1)
		go func() {
			_, err := s.Read(make([]byte, 1))
			done <- err
		}()
		c.Close()
		if err := <-done; err != io.EOF {
			t.Fatalf("blocked read when the peer closed: %v, want EOF", err)
		}
	})
	t.Run("addresses", func(t *testing.T) {
		c, s := connPair(t, hs["a"], hs["b"])
		if c.LocalAddr().String() != s.RemoteAddr().String() || c.RemoteAddr().String() != s.LocalAddr().String() {
			t.Fatalf("dialer %v -> %v, acceptor %v -> %v", c.LocalAddr(), c.RemoteAddr(), s.LocalAddr(), s.RemoteAddr())
		}
		if ip := c.LocalAddr().(*net.TCPAddr).IP.String(); ip != hs["a"].IP().String() {
			t.Fatalf("dialer's address %v, want host a's IP %v", ip, hs["a"].IP())
		}
	})
}

func second[T any](_ T, err error) error { return err }

func TestDialAndListenErrors(t *testing.T) {
	n, hs := newNet(t, Config{}, "a", "b")
	a := hs["a"]
	if _, err := a.Listen("b:7000"); err == nil {
		t.Error("listening on another host's address succeeded")
	}
	ln, err := a.Listen("a:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := a.Listen(":7000"); err == nil {
		t.Error("listening twice on a port succeeded")
	}
	for _, tc := range []struct{ network, addr, want string }{
		{"tcp", "nosuch:1", "no such host"},
		{"tcp", "b:7000", "connection refused"},
		{"tcp", "10.9.9.9:1", "no such host"},
		{"tcp", "b", "missing port"},
		{"tcp", "b:99999", "invalid port"},
		{"udp", "b:7000", "unknown network"},
	} {
		_, err := a.DialContext(t.Context(), tc.network, tc.addr)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("dial %s %s: %v, want %q", tc.network, tc.addr, err, tc.want)
		}
	}
	for _, addr := range []string{"a:7000", "10.0.0.1:7000", "localhost:7000", ":7000"} {
		c, err := a.DialContext(t.Context(), "tcp", addr)
		if err != nil {
			t.Errorf("dial %s: %v", addr, err)
			continue
		}
		c.Close()
	}
	for _, name := range []string{"", "a", "10.1.2.3", "x:y", "localhost"} {
		if _, err := n.AddHost(name); err == nil {
			t.Errorf("AddHost(%q) succeeded", name)
		}
	}
	if st := n.Stats(); st.DialsRefused != 1 {
		t.Errorf("stats: %+v, want 1 refused dial", st)
	}
}

// BenchmarkStream measures one direction's throughput with 1 MiB writes
// (the replication stream's largest frames) and the default windows.
func BenchmarkStream(b *testing.B) {
	n := New(Config{})
	a, _ := n.AddHost("a")
	h, _ := n.AddHost("b")
	ln, _ := h.Listen(":1")
	c, _ := a.DialTimeout("b:1", time.Second)
	s, _ := ln.Accept()
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(io.Discard, s)
	}()
	for b.Loop() {
		c.Write(data)
	}
	c.Close()
	<-done
}
