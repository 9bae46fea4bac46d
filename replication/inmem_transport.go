package replication

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrUnreachable is returned by the in-memory transport for a node that is
// not registered or is disconnected from the dialer.
var ErrUnreachable = errors.New("replication: node unreachable")

// InmemNetwork connects nodes inside one process, for tests. Faults:
// Disconnect breaks connections at once (the owner sees an error);
// Partition silently drops requests and replies (the owner sees a
// timeout); SetDelay slows delivery. Requests of one connection are
// handled in order by one goroutine, like a TCP stream.
type InmemNetwork struct {
	mu          sync.Mutex
	handlers    map[NodeID]Handler
	partitioned map[[2]NodeID]bool
	delay       map[NodeID]time.Duration
	conns       map[*inmemConn]struct{}
}

// NewInmemNetwork returns an empty network.
func NewInmemNetwork() *InmemNetwork {
	return &InmemNetwork{
		handlers:    map[NodeID]Handler{},
		partitioned: map[[2]NodeID]bool{},
		delay:       map[NodeID]time.Duration{},
		conns:       map[*inmemConn]struct{}{},
	}
}

// Register makes node reachable, serving h.
func (n *InmemNetwork) Register(node NodeID, h Handler) {
	n.mu.Lock()
	n.handlers[node] = h
	n.mu.Unlock()
}

// Unregister makes node unreachable: later dials fail at once.
func (n *InmemNetwork) Unregister(node NodeID) {
	n.mu.Lock()
	delete(n.handlers, node)
	n.mu.Unlock()
}

// Transport returns node's view of the network.
func (n *InmemNetwork) Transport(node NodeID) Transport { return &inmemTransport{net: n, from: node} }

func pairKey(a, b NodeID) [2]NodeID {
	if a > b {
		a, b = b, a
	}
	return [2]NodeID{a, b}
}

// Partition makes a and b unable to hear each other: requests and replies
// in either direction vanish (no error; the sender times out).
func (n *InmemNetwork) Partition(a, b NodeID) {
	n.mu.Lock()
	n.partitioned[pairKey(a, b)] = true
	n.mu.Unlock()
}

// Heal undoes Partition.
func (n *InmemNetwork) Heal(a, b NodeID) {
	n.mu.Lock()
	delete(n.partitioned, pairKey(a, b))
	n.mu.Unlock()
}

// Disconnect breaks every connection between a and b now: outstanding
// requests fail at once. It does not persist: later dials succeed (combine
// with Partition for a lasting cut).
func (n *InmemNetwork) Disconnect(a, b NodeID) {
	n.mu.Lock()
	var victims []*inmemConn
	for c := range n.conns {
		if pairKey(c.from, c.to) == pairKey(a, b) {
			victims = append(victims, c)
		}
	}
	n.mu.Unlock()
	for _, c := range victims {
		c.fail(fmt.Errorf("%w: %s disconnected from %s", ErrUnreachable, a, b))
	}
}

// SetDelay delays delivery of every request to node by d.
func (n *InmemNetwork) SetDelay(node NodeID, d time.Duration) {
	n.mu.Lock()
	n.delay[node] = d
	n.mu.Unlock()
}

func (n *InmemNetwork) cut(a, b NodeID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.partitioned[pairKey(a, b)]
}

type inmemTransport struct {
	net  *InmemNetwork
	from NodeID
}

func (t *inmemTransport) Dial(ctx context.Context, node NodeID) (Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := t.net
	n.mu.Lock()
	h, ok := n.handlers[node]
	if !ok {
		n.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, node)
	}
	c := &inmemConn{net: n, from: t.from, to: node, h: h, pending: map[uint64]func(*Message, error){}}
	c.cond = sync.NewCond(&c.mu)
	n.conns[c] = struct{}{}
	n.mu.Unlock()
	go c.run()
	return c, nil
}

type inmemReq struct {
	m    *Message
	done func(*Message, error)
}

type inmemConn struct {
	net      *InmemNetwork
	from, to NodeID
	h        Handler

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []inmemReq
	pending map[uint64]func(*Message, error)
	nextID  uint64
	err     error
}

func (c *inmemConn) Send(req *Message, done func(*Message, error)) {
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
	m.Payload = append([]byte(nil), req.Payload...) // the wire copies
	c.pending[m.ReqID] = done
	c.queue = append(c.queue, inmemReq{m: &m, done: done})
	c.cond.Signal()
	c.mu.Unlock()
}

func (c *inmemConn) run() {
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && c.err == nil {
			c.cond.Wait()
		}
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		r := c.queue[0]
		c.queue = c.queue[1:]
		c.mu.Unlock()

		c.net.mu.Lock()
		d := c.net.delay[c.to]
		c.net.mu.Unlock()
		if d > 0 {
			time.Sleep(d)
		}
		if c.net.cut(c.from, c.to) {
			continue // lost on the way
		}
		rep := c.h(r.m)
		if rep == nil || c.net.cut(c.from, c.to) {
			continue // reply lost
		}
		rep.ReqID = r.m.ReqID
		c.mu.Lock()
		done, ok := c.pending[rep.ReqID]
		delete(c.pending, rep.ReqID)
		c.mu.Unlock()
		if ok {
			done(rep, nil)
		}
	}
}

func (c *inmemConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	c.queue = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	c.net.mu.Lock()
	delete(c.net.conns, c)
	c.net.mu.Unlock()
	for _, done := range pending {
		go done(nil, err)
	}
}

func (c *inmemConn) Close() error {
	c.fail(ErrClosed)
	return nil
}
