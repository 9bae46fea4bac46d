package simnet

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// A cut holds what crosses it: the reader times out, the bytes wait at
// the sender, and the heal delivers them in order. Bytes that crossed
// before the cut stay readable.
func TestCutHoldsAndHealDelivers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cut, heal func(n *Network) error
	}{
		{"cut", func(n *Network) error { return n.Cut("a", "b") }, func(n *Network) error { return n.Heal("a", "b") }},
		{"cut one way", func(n *Network) error { return n.CutOneWay("a", "b") }, func(n *Network) error { return n.HealOneWay("a", "b") }},
		{"isolate sender", func(n *Network) error { return n.Isolate("a") }, func(n *Network) error { return n.Reconnect("a") }},
		{"isolate receiver", func(n *Network) error { return n.Isolate("b") }, func(n *Network) error { return n.Reconnect("b") }},
		{"partition", func(n *Network) error { return n.Partition([]string{"a"}, []string{"b", "c"}) }, func(n *Network) error { n.HealAll(); return nil }},
		{"pause sender", func(n *Network) error { return n.Pause("a") }, func(n *Network) error { return n.Resume("a") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, hs := newNet(t, Config{}, "a", "b", "c")
			c, s := connPair(t, hs["a"], hs["b"])
			write(t, c, "before|")
			if err := tc.cut(n); err != nil {
				t.Fatal(err)
			}
			write(t, c, "held-1|")
			write(t, c, "held-2")
			readN(t, s, "before|")
			readTimeout(t, s)
			if st := n.Stats(); st.BytesHeldFault != 13 || st.ConnsHeld != 1 {
				t.Fatalf("stats while cut: %+v, want 13 bytes held on 1 connection", st)
			}
			if err := tc.heal(n); err != nil {
				t.Fatal(err)
			}
			if st := n.Stats(); st.BytesHeld != 0 || st.ConnsHeld != 0 {
				t.Fatalf("stats after heal: %+v, want nothing held", st)
			}
			readN(t, s, "held-1|held-2")
		})
	}
}

// After Cut returns nothing more crosses, even from a writer that was
// writing during the cut: what the reader gets is exactly what had been
// delivered when Cut returned.
func TestCutIsSynchronous(t *testing.T) {
	n, hs := newNet(t, Config{Window: 1 << 20, SendBuffer: 1 << 20}, "a", "b")
	c, s := connPair(t, hs["a"], hs["b"])
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write([]byte("0123456789")); err != nil {
				return
			}
		}
	}()
	eventually(t, "some bytes", func() bool { return n.Stats().BytesDelivered > 1000 })
	if err := n.Cut("a", "b"); err != nil {
		t.Fatal(err)
	}
	atCut := n.Stats().BytesDelivered
	s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(s, make([]byte, atCut)); err != nil {
		t.Fatalf("reading the %d bytes that had crossed when Cut returned: %v", atCut, err)
	}
	s.SetReadDeadline(time.Time{})
	readTimeout(t, s)
	if st := n.Stats(); st.BytesDelivered != atCut {
		t.Fatalf("%d bytes crossed after Cut returned", st.BytesDelivered-atCut)
	}
	close(stop)
	n.Heal("a", "b")
	wg.Wait()
}

// A one-way cut holds one direction and lets the other through.
func TestAsymmetricCut(t *testing.T) {
	n, hs := newNet(t, Config{}, "a", "b")
	c, s := connPair(t, hs["a"], hs["b"])
	if err := n.CutOneWay("a", "b"); err != nil {
		t.Fatal(err)
	}
	write(t, c, "a->b")
	write(t, s, "b->a")
	readN(t, c, "b->a")
	readTimeout(t, s)
	if up, _ := n.Reachable("b", "a"); !up {
		t.Fatal("b -> a down after cutting a -> b")
	}
	if up, _ := n.Reachable("a", "b"); up {
		t.Fatal("a -> b up after cutting it")
	}
	n.HealOneWay("a", "b")
	readN(t, s, "a->b")
}

// A FIN waits behind a cut like the bytes before it; so does the reset
// of a peer that closed.
func TestCutHoldsCloseAndReset(t *testing.T) {
	n, hs := newNet(t, Config{}, "a", "b")
	c, s := connPair(t, hs["a"], hs["b"])
	n.Cut("a", "b")
	write(t, c, "last")
	c.Close()
	readTimeout(t, s)
	// s writes to a closed end, but the reset cannot come back: the
	// write is taken (held), not failed.
	write(t, s, "to the closed end")
	n.Heal("a", "b")
	readN(t, s, "last")
	if _, err := s.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the heal: %v, want EOF", err)
	}
	if _, err := s.Write([]byte("x")); !isReset(err) {
		t.Fatalf("write after the heal: %v, want ECONNRESET", err)
	}
}

// A dial needs both directions: across a cut either way it waits (no
// reset) until its timeout, or until the heal lets it through.
func TestDialAcrossCut(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(n *Network) error
	}{
		{"cut", func(n *Network) error { return n.Cut("a", "b") }},
		{"SYN lost", func(n *Network) error { return n.CutOneWay("a", "b") }},
		{"SYN-ACK lost", func(n *Network) error { return n.CutOneWay("b", "a") }},
		{"isolated", func(n *Network) error { return n.Isolate("b") }},
		{"dialer paused", func(n *Network) error { return n.Pause("a") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, hs := newNet(t, Config{}, "a", "b")
			ln, err := hs["b"].Listen(":80")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := tc.cut(n); err != nil {
				t.Fatal(err)
			}
			_, err = hs["a"].DialTimeout("b:80", 30*time.Millisecond)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("dial across the cut: %v, want a timeout", err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			go func() {
				eventually(t, "a waiting dial", func() bool { return n.Stats().DialsWaiting == 1 })
				cancel()
			}()
			if _, err := hs["a"].Dial(ctx, "b:80"); !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled dial: %v", err)
			}
			go func() {
				eventually(t, "a waiting dial", func() bool { return n.Stats().DialsWaiting == 1 })
				n.HealAll()
				n.Resume("a")
			}()
			c, err := hs["a"].Dial(t.Context(), "b:80")
			if err != nil {
				t.Fatalf("dial healed while waiting: %v", err)
			}
			c.Close()
			if st := n.Stats(); st.DialsFailed != 2 || st.DialsWaiting != 0 {
				t.Fatalf("stats: %+v, want 2 failed dials", st)
			}
		})
	}
}

// A paused host's network is frozen both ways while the others go on;
// resume delivers what waited, in order.
func TestPauseResume(t *testing.T) {
	n, hs := newNet(t, Config{Window: 8, SendBuffer: 8}, "a", "b", "c")
	ab, ba := connPair(t, hs["a"], hs["b"])
	ac, ca := connPair(t, hs["a"], hs["c"])
	write(t, ba, "early")
	eventually(t, "delivery", func() bool { return n.Stats().BytesDelivered == 5 })
	if err := n.Pause("a"); err != nil {
		t.Fatal(err)
	}
	// a reads nothing, not even what had arrived; its writes are held.
	readTimeout(t, ab)
	write(t, ab, "from a")
	readTimeout(t, ba)
	// b's writes to a fill a's receive window and b's send buffer, then
	// block, as a stopped process's kernel stops taking them.
	k, err := writeBlocked(t, ba, []byte("0123456789abcdefghij"), 11)
	if !isTimeout(err) || k != 11 { // 8 + 8 - the 5 bytes unread
		t.Fatalf("write to the paused host: %d, %v; want 11 and a timeout", k, err)
	}
	// b and c talk on.
	bc, cb := connPair(t, hs["b"], hs["c"])
	write(t, bc, "b and c")
	readN(t, cb, "b and c")
	// A dial to a paused host completes (its kernel answers); Accept
	// there waits for resume.
	ln, _ := hs["a"].Listen(":90")
	defer ln.Close()
	d, err := hs["c"].DialTimeout("a:90", 5*time.Second)
	if err != nil {
		t.Fatalf("dial to a paused host: %v", err)
	}
	defer d.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	write(t, ac, "")
	if err := n.Resume("a"); err != nil {
		t.Fatal(err)
	}
	readN(t, ab, "early0123456789a")
	readN(t, ba, "from a")
	write(t, ca, "c")
	readN(t, ac, "c")
	if c := <-accepted; c == nil {
		t.Fatal("accept after resume failed")
	} else {
		c.Close()
	}
}

// A crash breaks every connection of the host: the peers see a reset
// (once the link from the crashed host carries), its own sockets fail
// with ErrCrashed, its listeners close, and dials are refused until a new
// process listens.
func TestCrash(t *testing.T) {
	n, hs := newNet(t, Config{}, "a", "b", "c")
	ab, ba := connPair(t, hs["a"], hs["b"])
	cb, bc := connPair(t, hs["c"], hs["b"])
	ln, _ := hs["b"].Listen(":80")
	pc, _ := hs["b"].ListenPacket(":80")
	write(t, ba, "delivered")
	eventually(t, "delivery", func() bool { return n.Stats().BytesDelivered == 9 })
	n.Cut("b", "c")
	if err := n.Crash("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := ab.Read(make([]byte, 1)); !isReset(err) {
		t.Fatalf("peer's read after the crash: %v, want ECONNRESET", err)
	}
	if _, err := ab.Write([]byte("x")); !isReset(err) {
		t.Fatalf("peer's write after the crash: %v, want ECONNRESET", err)
	}
	// The reset to c is behind the cut: c's read waits, then fails.
	readTimeout(t, cb)
	n.Heal("b", "c")
	if _, err := cb.Read(make([]byte, 1)); !isReset(err) {
		t.Fatalf("read after the heal: %v, want ECONNRESET", err)
	}
	for name, err := range map[string]error{
		"read":      second(ba.Read(make([]byte, 1))),
		"write":     second(bc.Write([]byte("x"))),
		"accept":    second(ln.Accept()),
		"read from": third(pc.ReadFrom(make([]byte, 1))),
	} {
		if !errors.Is(err, ErrCrashed) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s on the crashed host: %v, want ErrCrashed", name, err)
		}
	}
	if _, err := hs["a"].DialTimeout("b:80", time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to the crashed host: %v, want refused", err)
	}
	ln2, err := hs["b"].Listen(":80")
	if err != nil {
		t.Fatalf("listen again after the crash: %v", err)
	}
	defer ln2.Close()
	c, err := hs["a"].DialTimeout("b:80", time.Second)
	if err != nil {
		t.Fatalf("dial the restarted host: %v", err)
	}
	c.Close()
	if st := n.Stats(); st.Crashes != 1 || st.ConnsReset != 2 {
		t.Fatalf("stats: %+v, want 1 crash and 2 resets", st)
	}
}

// A paused host learns of a peer's crash only when it resumes.
func TestPausedHostSeesCrashAfterResume(t *testing.T) {
	n, hs := newNet(t, Config{}, "a", "b")
	ab, _ := connPair(t, hs["a"], hs["b"])
	n.Pause("a")
	n.Crash("b")
	readTimeout(t, ab)
	n.Resume("a")
	if _, err := ab.Read(make([]byte, 1)); !isReset(err) {
		t.Fatalf("read after resume: %v, want ECONNRESET", err)
	}
}

// A listener closed with connections in its backlog resets them.
func TestListenerCloseResetsBacklog(t *testing.T) {
	_, hs := newNet(t, Config{}, "a", "b")
	ln, _ := hs["b"].Listen(":80")
	c, err := hs["a"].DialTimeout("b:80", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ln.Close()
	if _, err := c.Read(make([]byte, 1)); !isReset(err) {
		t.Fatalf("read on a connection its listener dropped: %v, want ECONNRESET", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}

// A dial to a full backlog waits for an Accept.
func TestBacklogFull(t *testing.T) {
	n, hs := newNet(t, Config{Backlog: 1}, "a", "b")
	ln, _ := hs["b"].Listen(":80")
	defer ln.Close()
	c1, err := hs["a"].DialTimeout("b:80", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if _, err := hs["a"].DialTimeout("b:80", 20*time.Millisecond); !isTimeout(err) {
		t.Fatalf("dial to a full backlog: %v, want a timeout", err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := hs["a"].DialTimeout("b:80", 10*time.Second)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	eventually(t, "a waiting dial", func() bool { return n.Stats().DialsWaiting == 1 })
	s, _ := ln.Accept()
	s.Close()
	if err := <-done; err != nil {
		t.Fatalf("dial after an accept made room: %v", err)
	}
}

func TestFaultErrors(t *testing.T) {
	n, _ := newNet(t, Config{}, "a", "b")
	for name, err := range map[string]error{
		"cut unknown":       n.Cut("a", "x"),
		"cut self":          n.CutOneWay("a", "a"),
		"heal unknown":      n.Heal("x", "a"),
		"pause unknown":     n.Pause("x"),
		"crash unknown":     n.Crash("x"),
		"isolate unknown":   n.Isolate("x"),
		"partition overlap": n.Partition([]string{"a"}, []string{"a", "b"}),
		"reachable unknown": second(n.Reachable("a", "x")),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if up, err := n.Reachable("a", "b"); !up || err != nil {
		t.Errorf("a failed fault operation changed the network: a -> b up %v, %v", up, err)
	}
}

func third[T, U any](_ T, _ U, err error) error { return err }
