package simnet

import (
	"context"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// Ports a host hands out for port 0 and for the local end of a dial.
const (
	firstEphemeral = 32768
	lastEphemeral  = 60999
)

// Host is one machine of a Network: it listens, dials and sends datagrams
// from its own address. Its methods are safe for concurrent use.
type Host struct {
	n    *Network
	name string
	ip   netip.Addr

	// Guarded by n.mu.
	paused    bool
	isolated  bool
	listeners map[int]*Listener
	packets   map[int]*PacketConn
	conns     map[*Conn]struct{} // open local ends
	nextPort  int
}

// Name returns the host's name.
func (h *Host) Name() string { return h.name }

// IP returns the host's address.
func (h *Host) IP() netip.Addr { return h.ip }

// Addr returns "ip:port" for a port of this host.
func (h *Host) Addr(port int) string { return netip.AddrPortFrom(h.ip, uint16(port)).String() }

func (h *Host) tcpAddr(port int) *net.TCPAddr {
	return &net.TCPAddr{IP: h.ip.AsSlice(), Port: port}
}

func (h *Host) udpAddr(port int) *net.UDPAddr {
	return &net.UDPAddr{IP: h.ip.AsSlice(), Port: port}
}

// ephemeral returns a port no listener or packet socket of h uses. n.mu
// is held.
func (h *Host) ephemeral() int {
	for range lastEphemeral - firstEphemeral + 1 {
		p := h.nextPort
		h.nextPort++
		if h.nextPort > lastEphemeral {
			h.nextPort = firstEphemeral
		}
		if h.listeners[p] == nil && h.packets[p] == nil {
			return p
		}
	}
	return 0
}

// bindPort checks that addr names this host and picks its port (0: a
// free one). inUse says whether a port is taken. n.mu is held.
func (h *Host) bindPort(op, network, addr string, inUse func(int) bool) (int, error) {
	hs, port, err := splitAddr(addr)
	if err != nil {
		return 0, &net.OpError{Op: op, Net: network, Err: err}
	}
	switch hs {
	case "", "0.0.0.0", "::":
	default:
		other, _, err := h.n.resolve(h, addr)
		if err != nil {
			return 0, &net.OpError{Op: op, Net: network, Err: err}
		}
		if other != h {
			return 0, &net.OpError{Op: op, Net: network, Err: os.NewSyscallError(op, syscall.EADDRNOTAVAIL)}
		}
	}
	if port == 0 {
		if port = h.ephemeral(); port == 0 {
			return 0, &net.OpError{Op: op, Net: network, Err: os.NewSyscallError(op, syscall.EADDRINUSE)}
		}
	} else if inUse(port) {
		var a net.Addr = h.tcpAddr(port)
		if network == "udp" {
			a = h.udpAddr(port)
		}
		return 0, &net.OpError{Op: op, Net: network, Addr: a, Err: os.NewSyscallError(op, syscall.EADDRINUSE)}
	}
	return port, nil
}

// wait releases n.mu until ch fires, the deadline passes or done closes,
// then takes n.mu again. Callers check their conditions again after it.
func (n *Network) wait(ch <-chan struct{}, deadline time.Time, done <-chan struct{}) {
	var tc <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		tc = t.C
	}
	n.mu.Unlock()
	select {
	case <-ch:
	case <-tc:
	case <-done:
	}
	n.mu.Lock()
}

var noDeadline time.Time

// passed reports whether a deadline is set and reached.
func passed(deadline time.Time) bool {
	return !deadline.IsZero() && !time.Now().Before(deadline)
}

// Dial connects to addr ("host:port", by name or IP) until ctx ends; see
// DialContext.
func (h *Host) Dial(ctx context.Context, addr string) (*Conn, error) {
	return h.dial(ctx, addr)
}

// DialTimeout connects to addr, giving up after timeout (0: no limit).
func (h *Host) DialTimeout(addr string, timeout time.Duration) (*Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return h.dial(ctx, addr)
}

// DialContext is the dial function of http.Transport and the like: it
// connects to addr over the network "tcp" (or "tcp4", "tcp6"). A dial
// needs both directions of the link up and this host running: across a
// cut or from a paused host it waits (a lost SYN is retried, there is no
// reset) until ctx ends, then fails with a timeout error (net.Error with
// Timeout() true, errors.Is context.DeadlineExceeded) or ctx's
// cancellation. To a port nobody listens on it fails at once with
// ECONNREFUSED; to a full backlog it waits. A paused peer's kernel still
// completes the handshake: the dial succeeds and Accept waits for resume.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "":
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
	}
	c, err := h.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (h *Host) dial(ctx context.Context, addr string) (*Conn, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	dst, port, err := n.resolve(h, addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
	}
	raddr := dst.tcpAddr(port)
	fail := func(err error) (*Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: raddr, Err: err}
	}
	n.st.Dials++
	waiting := false
	defer func() {
		if waiting {
			n.st.DialsWaiting--
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			n.st.DialsFailed++
			if err == context.DeadlineExceeded {
				return fail(errDialTimeout)
			}
			return fail(err)
		}
		var ch <-chan struct{}
		if !h.paused && n.up(h, dst) && n.up(dst, h) {
			ln := dst.listeners[port]
			if ln == nil {
				n.st.DialsRefused++
				return fail(os.NewSyscallError("connect", syscall.ECONNREFUSED))
			}
			if len(ln.backlog) < n.cfg.Backlog {
				c := n.connect(h, ln)
				return c, nil
			}
			ch = ln.sig.ch()
		} else {
			ch = n.faults.ch()
		}
		if !waiting {
			waiting = true
			n.st.DialsWaiting++
		}
		n.wait(ch, time.Time{}, ctx.Done())
	}
}

// errDialTimeout is what a dial that ran out of time returns: "i/o
// timeout", a net.Error with Timeout() true, and errors.Is it
// context.DeadlineExceeded and os.ErrDeadlineExceeded.
var errDialTimeout error = dialTimeoutError{}

type dialTimeoutError struct{}

func (dialTimeoutError) Error() string   { return "i/o timeout" }
func (dialTimeoutError) Timeout() bool   { return true }
func (dialTimeoutError) Temporary() bool { return true }
func (dialTimeoutError) Is(target error) bool {
	return target == context.DeadlineExceeded || target == os.ErrDeadlineExceeded
}
