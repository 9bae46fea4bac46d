package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatgt/hatgt/internal/simnet"
)

// A transport built with NewTCPTransportDialer connects through the dial
// function it was given (a simulator's network, say) and works as the
// default one does.
func TestTCPTransportDialerIsUsed(t *testing.T) {
	c := newTCPCluster(t, 65536, "a")
	var dials atomic.Int32
	var gotNetwork, gotAddr atomic.Value
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		gotNetwork.Store(network)
		gotAddr.Store(addr)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	tr := NewTCPTransportDialer(func(n NodeID) (string, error) { return c.addrs[n], nil }, dial, nil)
	conn, err := tr.Dial(context.Background(), "a")
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
		t.Fatalf("hello through the injected dialer: %+v", m)
	}
	if dials.Load() != 1 || gotNetwork.Load() != "tcp" || gotAddr.Load() != c.addrs["a"] {
		t.Fatalf("dial func called %d times with %v %v; want once with tcp %s", dials.Load(), gotNetwork.Load(), gotAddr.Load(), c.addrs["a"])
	}
}

// An injected dial gets a context that ends after DialTimeout (an
// in-memory network holds a dial across a cut until its context ends, as
// a real one waits for the kernel's connect timeout), or earlier if the
// caller's does; its error comes back as is.
func TestTCPTransportDialerIsBounded(t *testing.T) {
	errDial := errors.New("refused by the test")
	for _, tc := range []struct {
		name   string
		caller time.Duration // 0: no deadline
	}{
		{"no caller deadline", 0},
		{"longer caller deadline", time.Hour},
		{"shorter caller deadline", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var deadline time.Time
			var hasDeadline bool
			dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
				deadline, hasDeadline = ctx.Deadline()
				return nil, errDial
			}
			tr := NewTCPTransportDialer(func(NodeID) (string, error) { return "b:1", nil }, dial, nil)
			before := time.Now()
			ctx := context.Background()
			if tc.caller > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.caller)
				defer cancel()
			}
			bound := DialTimeout
			if tc.caller > 0 {
				bound = min(bound, tc.caller)
			}
			_, err := tr.Dial(ctx, "b")
			after := time.Now()
			if !errors.Is(err, errDial) {
				t.Fatalf("dial error %v, want the dial func's", err)
			}
			if !hasDeadline || deadline.Before(before.Add(bound)) || deadline.After(after.Add(bound)) {
				t.Fatalf("dial context deadline %v (set %v), want %v after the call", deadline.Sub(before), hasDeadline, bound)
			}
		})
	}
}

// A nil dial func means a net.Dialer.
func TestTCPTransportDialerNil(t *testing.T) {
	c := newTCPCluster(t, 65536, "a")
	tr := NewTCPTransportDialer(func(n NodeID) (string, error) {
		if a, ok := c.addrs[n]; ok {
			return a, nil
		}
		return "", fmt.Errorf("no address for %s", n)
	}, nil, nil)
	conn, err := tr.Dial(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

// The replication stream over the simulator's network: a hello is
// answered, and across a cut the dial waits for its context, no reset
// (the fault the injected dialer exists to simulate).
func TestTCPTransportOverSimnet(t *testing.T) {
	c := newTestCluster(t, 65536, "a")
	sn := simnet.New(simnet.Config{})
	owner, _ := sn.AddHost("owner")
	mirror, _ := sn.AddHost("mirror")
	ln, err := mirror.Listen(":3261")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewTCPServer(c.mirrors["a"].Handle, nil)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	tr := NewTCPTransportDialer(func(NodeID) (string, error) { return "mirror:3261", nil }, owner.DialContext, nil)

	conn, err := tr.Dial(context.Background(), "a")
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
		t.Fatalf("hello over simnet: %+v", m)
	}

	sn.Cut("owner", "mirror")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := tr.Dial(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial across a cut: %v, want a timeout", err)
	}
}
