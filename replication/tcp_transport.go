package replication

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"
)

// Resolver maps a node to its replication address (host:port).
type Resolver func(NodeID) (string, error)

// TCPTransport dials mirrors over TCP. Each Conn is one TCP connection;
// requests are pipelined and every batch that is queued while the previous
// one is being written goes out in a single write.
type TCPTransport struct {
	resolve    Resolver
	dial       DialFunc
	logger     *slog.Logger
	maxPayload int
}

// DialFunc opens a connection to addr, as net.Dialer.DialContext does.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// NewTCPTransport returns a transport that finds nodes with resolve.
func NewTCPTransport(resolve Resolver, logger *slog.Logger) *TCPTransport {
	return NewTCPTransportDialer(resolve, nil, logger)
}

// NewTCPTransportDialer is NewTCPTransport connecting with dial (an
// in-memory network's, in a simulator) instead of a net.Dialer; nil means
// a net.Dialer. Either way a dial gets a context that ends after
// DialTimeout.
func NewTCPTransportDialer(resolve Resolver, dial DialFunc, logger *slog.Logger) *TCPTransport {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return &TCPTransport{resolve: resolve, logger: logger, maxPayload: maxReplyPayload, dial: dial}
}

// DialTimeout bounds a connection attempt to a mirror. A node cut off
// without a reset would otherwise hold a new owner's Open (which says
// hello to every in-sync copy) for the kernel's connect timeout, minutes.
const DialTimeout = 2 * time.Second

// Dial connects to node.
func (t *TCPTransport) Dial(ctx context.Context, node NodeID) (Conn, error) {
	addr, err := t.resolve(node)
	if err != nil {
		return nil, fmt.Errorf("replication: resolve %s: %w", node, err)
	}
	dctx, cancel := context.WithTimeout(ctx, DialTimeout)
	nc, err := t.dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	c := &tcpConn{nc: nc, pending: map[uint64]func(*Message, error){}, logger: t.logger.With("peer", string(node)), maxPayload: t.maxPayload}
	go c.readLoop()
	return c, nil
}

type tcpConn struct {
	nc         net.Conn
	logger     *slog.Logger
	maxPayload int

	mu      sync.Mutex
	out     []byte // frames queued, not written yet
	spare   []byte // the buffer of the last write, reused
	writing bool   // a goroutine is in flush's write loop
	pending map[uint64]func(*Message, error)
	nextID  uint64
	err     error
}

// Send queues req and writes it (with anything else queued), unless
// another goroutine is writing already: that one takes it along.
func (c *tcpConn) Send(req *Message, done func(*Message, error)) {
	c.Queue(req, done)
	c.Flush()
}

// Queue adds req to the buffer without writing it.
func (c *tcpConn) Queue(req *Message, done func(*Message, error)) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		go done(nil, err)
		return
	}
	c.nextID++
	m := *req
	m.ReqID = c.nextID
	c.pending[m.ReqID] = done
	c.out = AppendMessage(c.out, &m)
	c.mu.Unlock()
}

// Flush writes whatever is queued, in this goroutine, until the buffer is
// empty; frames queued meanwhile by others share the next write (under
// load many frames share a syscall). If another goroutine is writing, it
// returns at once: that writer sends what was queued.
func (c *tcpConn) Flush() {
	c.mu.Lock()
	if c.writing {
		c.mu.Unlock()
		return
	}
	c.writing = true
	// Let the goroutines that are ready to run queue their requests
	// first: they then share this write (with few Ps, each would
	// otherwise reach its own write before the next one runs).
	c.mu.Unlock()
	runtime.Gosched()
	c.mu.Lock()
	for len(c.out) > 0 && c.err == nil {
		buf := c.out
		c.out = c.spare[:0]
		c.mu.Unlock()
		_, err := c.nc.Write(buf)
		if err != nil {
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			c.fail(err)
			return
		}
		c.mu.Lock()
		c.spare = buf
	}
	c.writing = false
	c.mu.Unlock()
}

func (c *tcpConn) readLoop() {
	r := bufio.NewReaderSize(c.nc, 256<<10)
	for {
		m, err := ReadMessage(r, c.maxPayload)
		if err != nil {
			c.fail(err)
			return
		}
		if m.Type != MsgReply {
			c.fail(fmt.Errorf("%w: %v from a mirror", ErrBadMessage, m.Type))
			return
		}
		c.mu.Lock()
		done, ok := c.pending[m.ReqID]
		delete(c.pending, m.ReqID)
		c.mu.Unlock()
		if ok {
			done(m, nil)
		}
	}
}

func (c *tcpConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	c.out = nil
	c.mu.Unlock()
	_ = c.nc.Close()
	if !errors.Is(err, ErrClosed) {
		c.logger.Warn("replication connection failed", "err", err)
	}
	for _, done := range pending {
		done(nil, err)
	}
}

func (c *tcpConn) Close() error {
	c.fail(ErrClosed)
	return nil
}

// TCPServer accepts replication connections and serves them with a
// Handler: one goroutine per connection calls the handler for each request
// in order and writes the replies, batched.
//
// Anyone who can reach the port can connect, so what a connection costs
// is bounded: a frame whose payload is above the server's limit
// (SetMaxPayload) closes the connection before any of it is read, a
// payload is read into the connection's buffer only as its bytes arrive,
// and at most SetMaxConns connections are served at once. A connection
// holds a 256 KiB read buffer and, once it received one, a payload buffer
// of up to the limit: about 1.3 MiB each with the defaults.
type TCPServer struct {
	h      Handler
	logger *slog.Logger

	mu         sync.Mutex
	ln         net.Listener
	conns      map[net.Conn]struct{}
	closed     bool
	maxPayload int
	maxConns   int
	wg         sync.WaitGroup
}

// DefaultServerMaxConns is a TCPServer's connection limit unless
// SetMaxConns changes it. A node needs one connection per copy it holds
// of a LUN (from that LUN's owner), plus one per verify running.
const DefaultServerMaxConns = 1024

// NewTCPServer returns a server for h; call Serve with a listener.
func NewTCPServer(h Handler, logger *slog.Logger) *TCPServer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &TCPServer{h: h, logger: logger, conns: map[net.Conn]struct{}{},
		maxPayload: DefaultServerMaxPayload, maxConns: DefaultServerMaxConns}
}

// SetMaxPayload sets the largest payload a request may carry (n <= 0 or
// above MaxPayload: MaxPayload). It must be at least the Config.MaxMessage
// of every owner that replicates to this node: a larger frame closes its
// connection (ErrTooLarge, logged here), which the owner sees as a failed
// mirror. Call it before Serve.
func (s *TCPServer) SetMaxPayload(n int) {
	if n <= 0 || n > MaxPayload {
		n = MaxPayload
	}
	s.mu.Lock()
	s.maxPayload = n
	s.mu.Unlock()
}

// SetMaxConns sets how many connections are served at once (n <= 0:
// DefaultServerMaxConns); a connection beyond it is closed as soon as it
// is accepted. Call it before Serve.
func (s *TCPServer) SetMaxConns(n int) {
	if n <= 0 {
		n = DefaultServerMaxConns
	}
	s.mu.Lock()
	s.maxConns = n
	s.mu.Unlock()
}

// Serve accepts connections on ln until Close; it returns ErrClosed then.
func (s *TCPServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrClosed
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return ErrClosed
		}
		if len(s.conns) >= s.maxConns {
			limit := s.maxConns
			s.mu.Unlock()
			s.logger.Warn("replication: refusing a connection: too many open (TCPServer.SetMaxConns)", "remote", nc.RemoteAddr().String(), "limit", limit)
			nc.Close()
			continue
		}
		s.conns[nc] = struct{}{}
		maxPayload := s.maxPayload
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(nc, maxPayload)
	}
}

// Close stops accepting, closes every connection and waits for their
// goroutines.
func (s *TCPServer) Close() error {
	s.mu.Lock()
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *TCPServer) serveConn(nc net.Conn, maxPayload int) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		nc.Close()
	}()
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	// The reader applies the requests in order and writes their replies
	// itself: each time it has no further request already read, it
	// writes every reply gathered since its last write in one call. No
	// hand-off to a writer goroutine (a wake-up costs more than the
	// write), and replies to a burst of pipelined requests share a
	// syscall.
	// The handler is done with a request's payload when it returns (it
	// applies the request before the next is read), so one buffer serves
	// every payload of the connection: no allocation, no zeroing and no
	// garbage per replicated write.
	r := bufio.NewReaderSize(nc, 256<<10)
	var out, payload []byte
	for {
		var req *Message
		var err error
		req, payload, err = ReadMessageBuf(r, maxPayload, payload)
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				s.logger.Warn("replication: dropping connection after a frame above this server's payload limit (TCPServer.SetMaxPayload must be at least the owners' MaxMessage)",
					"remote", nc.RemoteAddr().String(), "err", err)
			} else if errors.Is(err, ErrBadMessage) {
				s.logger.Warn("replication: dropping connection after a bad frame", "remote", nc.RemoteAddr().String(), "err", err)
			}
			break
		}
		var rep *Message
		if req.Type == MsgReply {
			rep = reply(req, StatusBadRequest)
		} else {
			rep = s.h(req)
		}
		if rep != nil {
			rep.ReqID = req.ReqID
			out = AppendMessage(out, rep)
		}
		if len(out) > 0 && r.Buffered() == 0 {
			if _, err := nc.Write(out); err != nil {
				break
			}
			out = out[:0]
		}
	}
}
