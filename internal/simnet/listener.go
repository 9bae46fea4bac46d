package simnet

import (
	"net"
)

// Listener accepts stream connections on one port of a host. It
// implements net.Listener; its methods are safe for concurrent use.
type Listener struct {
	host *Host
	port int
	addr *net.TCPAddr

	// Guarded by n.mu.
	backlog []*Conn // server ends not accepted yet
	closed  bool
	crashed bool
	sig     signal
}

var _ net.Listener = (*Listener)(nil)

// Listen listens on addr: ":port", "0.0.0.0:port", or this host's name
// or IP with a port; port 0 picks a free one (Addr tells which). A port
// in use fails with EADDRINUSE, another host's address with
// EADDRNOTAVAIL.
func (h *Host) Listen(addr string) (*Listener, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	port, err := h.bindPort("listen", "tcp", addr, func(p int) bool { return h.listeners[p] != nil })
	if err != nil {
		return nil, err
	}
	l := &Listener{host: h, port: port, addr: h.tcpAddr(port)}
	h.listeners[port] = l
	return l, nil
}

// Accept waits for a connection. On a paused host it waits for resume.
// After Close (or a crash of the host) it fails with an error that
// errors.Is net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	n := l.host.n
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		if l.crashed {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: ErrCrashed}
		}
		if l.closed {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
		}
		if !l.host.paused && len(l.backlog) > 0 {
			c := l.backlog[0]
			l.backlog[0] = nil
			l.backlog = l.backlog[1:]
			l.sig.fire() // room in the backlog for a waiting dial
			return c, nil
		}
		n.wait(l.sig.ch(), noDeadline, nil)
	}
}

// Close stops listening. Connections queued and not accepted are reset
// (their dialers see ECONNRESET); accepted ones stay open.
func (l *Listener) Close() error {
	n := l.host.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if l.closed {
		return &net.OpError{Op: "close", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
	}
	n.closeListener(l)
	return nil
}

// closeListener closes l and resets its backlog. n.mu is held.
func (n *Network) closeListener(l *Listener) {
	l.closed = true
	if l.host.listeners[l.port] == l {
		delete(l.host.listeners, l.port)
	}
	for _, c := range l.backlog {
		n.closeConn(c, true)
	}
	l.backlog = nil
	l.sig.fire()
}

// Addr returns the listening address (*net.TCPAddr, the host's IP).
func (l *Listener) Addr() net.Addr { return l.addr }
