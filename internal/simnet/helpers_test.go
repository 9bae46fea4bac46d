package simnet

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// newNet returns a network with the named hosts.
func newNet(t *testing.T, cfg Config, names ...string) (*Network, map[string]*Host) {
	t.Helper()
	n := New(cfg)
	hs := map[string]*Host{}
	for _, name := range names {
		h, err := n.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		hs[name] = h
	}
	return n, hs
}

// connPair connects a to b and returns the dialer's end and the
// acceptor's.
func connPair(t *testing.T, a, b *Host) (*Conn, *Conn) {
	t.Helper()
	ln, err := b.Listen(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := a.DialTimeout(ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s.(*Conn)
}

// readTimeout reads with a short deadline and wants a timeout: nothing
// arrives.
func readTimeout(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, 64)
	k, err := c.Read(b)
	if !isTimeout(err) {
		t.Fatalf("read got %q, %v; want nothing and a timeout", b[:k], err)
	}
}

// readN reads exactly len(want) bytes and compares them.
func readN(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, len(want))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v (got %q)", len(want), err, b)
	}
	if string(b) != want {
		t.Fatalf("read %q, want %q", b, want)
	}
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if k, err := c.Write([]byte(s)); err != nil || k != len(s) {
		t.Fatalf("write %q: %d, %v", s, k, err)
	}
}

// writeBlocked writes b on c in the background until the network has
// taken want bytes of it, then ends the write with a deadline, and
// returns what Write returned: no timing in the outcome, however slow the
// machine.
func writeBlocked(t *testing.T, c *Conn, b []byte, want int) (int, error) {
	t.Helper()
	n := c.n
	before := n.Stats().BytesWritten
	type result struct {
		k   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		k, err := c.Write(b)
		done <- result{k, err}
	}()
	eventually(t, "the write to take its bytes", func() bool { return n.Stats().BytesWritten-before >= uint64(want) })
	c.SetWriteDeadline(time.Now())
	r := <-done
	c.SetWriteDeadline(time.Time{})
	return r.k, r.err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// eventually polls cond until it holds, failing after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// testLog passes a component's log to t.Log under -v until the test ends.
type testLog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func newTestLog(t *testing.T) *testLog {
	l := &testLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	return l
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done && testing.Verbose() {
		l.t.Log(string(p))
	}
	return len(p), nil
}
