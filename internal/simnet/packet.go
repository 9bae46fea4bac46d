package simnet

import (
	"net"
	"os"
	"syscall"
	"time"
)

// MaxDatagram is the largest datagram WriteTo sends (UDP over IPv4).
const MaxDatagram = 65507

// PacketConn is a datagram socket on one port of a host: unreliable,
// unordered in principle (in order here), never held. A datagram is
// dropped when the link is down, the sender is paused, nobody listens on
// the port, or the receiver's queue (Config.DatagramQueue) is full; a
// paused receiver's kernel still queues what arrives. It implements
// net.PacketConn; its methods are safe for concurrent use.
type PacketConn struct {
	host *Host
	port int
	addr *net.UDPAddr

	// Guarded by n.mu.
	queue    []datagram
	closed   bool
	crashed  bool
	rdl, wdl time.Time
	sig      signal
}

type datagram struct {
	data []byte
	from *net.UDPAddr
}

var _ net.PacketConn = (*PacketConn)(nil)

// ListenPacket opens a datagram socket on addr (as Listen; UDP ports are
// apart from stream ports, so both may use the same number).
func (h *Host) ListenPacket(addr string) (*PacketConn, error) {
	n := h.n
	n.mu.Lock()
	defer n.mu.Unlock()
	port, err := h.bindPort("listen", "udp", addr, func(p int) bool { return h.packets[p] != nil })
	if err != nil {
		return nil, err
	}
	pc := &PacketConn{host: h, port: port, addr: h.udpAddr(port)}
	h.packets[port] = pc
	return pc, nil
}

func (pc *PacketConn) opErr(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: pc.addr, Addr: addr, Err: err}
}

// closedErr is the error of an operation after Close or a crash. n.mu is
// held.
func (pc *PacketConn) closedErr(op string) error {
	switch {
	case pc.crashed:
		return pc.opErr(op, nil, ErrCrashed)
	case pc.closed:
		return pc.opErr(op, nil, net.ErrClosed)
	}
	return nil
}

// ReadFrom waits for a datagram and copies it into b (a longer one is
// cut to len(b), as UDP does). On a paused host it waits for resume.
func (pc *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n := pc.host.n
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		if err := pc.closedErr("read"); err != nil {
			return 0, nil, err
		}
		if passed(pc.rdl) {
			return 0, nil, pc.opErr("read", nil, os.ErrDeadlineExceeded)
		}
		if !pc.host.paused && len(pc.queue) > 0 {
			d := pc.queue[0]
			pc.queue[0] = datagram{}
			pc.queue = pc.queue[1:]
			return copy(b, d.data), d.from, nil
		}
		n.wait(pc.sig.ch(), pc.rdl, nil)
	}
}

// WriteTo sends b to addr (its String() is resolved as in Dial). See
// WriteToAddr.
func (pc *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if addr == nil {
		return 0, pc.opErr("write", nil, &net.AddrError{Err: "missing address"})
	}
	return pc.WriteToAddr(b, addr.String())
}

// WriteToAddr sends b to "host:port". It never waits: a datagram that
// cannot be delivered is dropped and WriteToAddr still succeeds, as UDP
// does. It fails for an unknown host, a datagram over MaxDatagram, a
// passed write deadline, or a closed socket.
func (pc *PacketConn) WriteToAddr(b []byte, addr string) (int, error) {
	n := pc.host.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := pc.closedErr("write"); err != nil {
		return 0, err
	}
	dst, port, err := n.resolve(pc.host, addr)
	if err != nil {
		return 0, pc.opErr("write", nil, err)
	}
	to := dst.udpAddr(port)
	if passed(pc.wdl) {
		return 0, pc.opErr("write", to, os.ErrDeadlineExceeded)
	}
	if len(b) > MaxDatagram {
		return 0, pc.opErr("write", to, os.NewSyscallError("sendto", syscall.EMSGSIZE))
	}
	n.st.DatagramsSent++
	r := dst.packets[port]
	if pc.host.paused || !n.up(pc.host, dst) || r == nil || len(r.queue) >= n.cfg.DatagramQueue {
		n.st.DatagramsDropped++
		return len(b), nil
	}
	r.queue = append(r.queue, datagram{data: append([]byte(nil), b...), from: pc.addr})
	n.st.DatagramsDelivered++
	r.sig.fire()
	return len(b), nil
}

// Close closes the socket; datagrams queued on it are lost.
func (pc *PacketConn) Close() error {
	n := pc.host.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if pc.closed {
		return pc.opErr("close", nil, net.ErrClosed)
	}
	n.closePacket(pc)
	return nil
}

// closePacket closes pc. n.mu is held.
func (n *Network) closePacket(pc *PacketConn) {
	pc.closed = true
	if pc.host.packets[pc.port] == pc {
		delete(pc.host.packets, pc.port)
	}
	n.st.DatagramsDropped += uint64(len(pc.queue))
	pc.queue = nil
	pc.sig.fire()
}

// LocalAddr returns the socket's address (*net.UDPAddr).
func (pc *PacketConn) LocalAddr() net.Addr { return pc.addr }

// SetDeadline sets the read and write deadlines; see net.PacketConn.
func (pc *PacketConn) SetDeadline(t time.Time) error { return pc.setDeadlines(t, true, true) }

// SetReadDeadline sets the read deadline.
func (pc *PacketConn) SetReadDeadline(t time.Time) error { return pc.setDeadlines(t, true, false) }

// SetWriteDeadline sets the write deadline.
func (pc *PacketConn) SetWriteDeadline(t time.Time) error { return pc.setDeadlines(t, false, true) }

func (pc *PacketConn) setDeadlines(t time.Time, read, write bool) error {
	n := pc.host.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := pc.closedErr("set deadline"); err != nil {
		return err
	}
	if read {
		pc.rdl = t
	}
	if write {
		pc.wdl = t
	}
	pc.sig.fire()
	return nil
}
