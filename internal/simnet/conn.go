package simnet

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Conn is one end of a stream: a full-duplex, in-order, reliable byte
// stream with TCP's behaviour under faults (see the package doc). It
// implements net.Conn; its methods are safe for concurrent use.
type Conn struct {
	n              *Network
	host, peerHost *Host
	local, remote  *net.TCPAddr
	in, out        *pipe
	peer           *Conn

	// Guarded by n.mu.
	closed   bool
	crashed  bool // closed by a crash of its host
	rst      bool // the peer's kernel reset the connection; seen when the link from the peer is up
	reset    bool // this end has seen the reset: every operation fails
	rdl, wdl time.Time
}

var _ net.Conn = (*Conn)(nil)

// connect makes a connection from client to ln and queues its server end
// for Accept. n.mu is held.
func (n *Network) connect(client *Host, ln *Listener) *Conn {
	srv := ln.host
	caddr := client.tcpAddr(client.ephemeral())
	up := &pipe{src: client, dst: srv}
	down := &pipe{src: srv, dst: client}
	cc := &Conn{n: n, host: client, peerHost: srv, local: caddr, remote: ln.addr, out: up, in: down}
	sc := &Conn{n: n, host: srv, peerHost: client, local: ln.addr, remote: caddr, out: down, in: up}
	cc.peer, sc.peer = sc, cc
	client.conns[cc] = struct{}{}
	srv.conns[sc] = struct{}{}
	n.pipes[up] = struct{}{}
	n.pipes[down] = struct{}{}
	n.st.Conns += 2
	ln.backlog = append(ln.backlog, sc)
	ln.sig.fire()
	return cc
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}

// check returns the error every operation of op gets now, if any. n.mu
// is held.
func (c *Conn) check(op string) error {
	switch {
	case c.crashed:
		return c.opErr(op, ErrCrashed)
	case c.closed:
		return c.opErr(op, net.ErrClosed)
	case c.reset:
		return c.opErr(op, os.NewSyscallError(op, syscall.ECONNRESET))
	case c.host.paused:
		// A stopped process learns nothing new.
		return nil
	}
	n := c.n
	// The peer's kernel reset the connection (its process crashed, or
	// its listener closed before accepting): the reset travels from the
	// peer. And bytes sent to a peer that closed are answered with a
	// reset, once both directions carry.
	if (c.rst && n.up(c.peerHost, c.host)) ||
		(op == "write" && c.out.rclosed && n.up(c.host, c.peerHost) && n.up(c.peerHost, c.host)) {
		c.reset = true
		n.st.ConnsReset++
		n.discard(c.in)
		n.discard(c.out)
		return c.opErr(op, os.NewSyscallError(op, syscall.ECONNRESET))
	}
	return nil
}

// Read reads what has crossed the link, waiting for it. It returns io.EOF
// after the peer closed (or CloseWrite) and every byte before was read;
// an error with Timeout() true (errors.Is os.ErrDeadlineExceeded) once the
// read deadline passed; ECONNRESET once a reset from the peer arrived.
// On a paused host it waits for resume.
func (c *Conn) Read(b []byte) (int, error) {
	n := c.n
	n.mu.Lock()
	defer n.mu.Unlock()
	p := c.in
	for {
		if err := c.check("read"); err != nil {
			return 0, err
		}
		if passed(c.rdl) {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		if len(b) == 0 {
			return 0, nil
		}
		if !c.host.paused {
			if p.dlv > 0 {
				k, _ := p.buf.Read(b[:min(len(b), p.dlv)])
				p.dlv -= k
				n.st.BytesRead += uint64(k)
				p.sig.fire() // room for the writer
				n.advance(p)
				return k, nil
			}
			if p.finDlv {
				return 0, io.EOF
			}
		}
		n.wait(p.sig.ch(), c.rdl, nil)
	}
}

// Write queues b for the peer, waiting while the send buffer is full (the
// peer does not read, or a fault holds the bytes). It returns the bytes
// queued and an error with Timeout() true once the write deadline passed,
// or ECONNRESET after the peer closed or crashed and its reset arrived.
func (c *Conn) Write(b []byte) (int, error) {
	n := c.n
	n.mu.Lock()
	defer n.mu.Unlock()
	p := c.out
	done := 0
	for {
		if err := c.check("write"); err != nil {
			return done, err
		}
		if p.fin {
			return done, c.opErr("write", os.NewSyscallError("write", syscall.EPIPE))
		}
		if passed(c.wdl) {
			return done, c.opErr("write", os.ErrDeadlineExceeded)
		}
		if done == len(b) {
			return done, nil
		}
		if room := n.cfg.SendBuffer - p.held(); room > 0 {
			k := min(room, len(b)-done)
			p.buf.Write(b[done : done+k])
			done += k
			n.st.BytesWritten += uint64(k)
			n.advance(p)
			continue
		}
		n.wait(p.sig.ch(), c.wdl, nil)
	}
}

// Close closes this end. Bytes written before it still cross (a cut holds
// them, as TCP keeps retransmitting after close), then the peer reads
// EOF; bytes that reach this end afterwards are answered with a reset.
func (c *Conn) Close() error {
	n := c.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if c.closed {
		return c.opErr("close", net.ErrClosed)
	}
	n.closeConn(c, false)
	return nil
}

// CloseWrite shuts down the writing side, as TCPConn.CloseWrite: the peer
// reads EOF after the bytes written before.
func (c *Conn) CloseWrite() error {
	n := c.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := c.check("close"); err != nil {
		return err
	}
	c.out.fin = true
	n.advance(c.out)
	c.out.sig.fire()
	return nil
}

// closeConn closes c; abort (a crash, a listener closed before Accept)
// drops its unsent bytes and resets the peer. n.mu is held.
func (n *Network) closeConn(c *Conn, abort bool) {
	c.closed = true
	delete(c.host.conns, c)
	n.st.Conns--
	c.in.rclosed = true
	n.discard(c.in)
	switch {
	case abort:
		n.discardHeld(c.out)
		c.peer.rst = true
	case c.reset:
		n.discard(c.out)
	default:
		c.out.fin = true
		n.advance(c.out)
	}
	if c.peer.closed {
		n.discard(c.out)
		delete(n.pipes, c.in)
		delete(n.pipes, c.out)
	}
	c.in.sig.fire()
	c.out.sig.fire()
}

// LocalAddr returns this end's address (*net.TCPAddr, the host's IP).
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address (*net.TCPAddr).
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines; see net.Conn. A new
// deadline applies to Reads and Writes already waiting.
func (c *Conn) SetDeadline(t time.Time) error {
	return c.setDeadlines(t, true, true)
}

// SetReadDeadline sets the read deadline; see net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.setDeadlines(t, true, false)
}

// SetWriteDeadline sets the write deadline; see net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.setDeadlines(t, false, true)
}

func (c *Conn) setDeadlines(t time.Time, read, write bool) error {
	n := c.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if c.closed {
		return c.opErr("set deadline", net.ErrClosed)
	}
	if read {
		c.rdl = t
		c.in.sig.fire()
	}
	if write {
		c.wdl = t
		c.out.sig.fire()
	}
	return nil
}
