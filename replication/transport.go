package replication

import "context"

// Handler serves replication requests on a mirror node. A transport calls
// it for the requests of one connection one at a time, in the order they
// were sent (so writes to overlapping ranges apply in the owner's order),
// and sends the reply it returns. req, its Payload included, is the
// handler's only until it returns (the transport reads the next payload
// into the same buffer). Mirror.Handle is the Handler of a node.
type Handler func(req *Message) *Message

// Transport connects an owner to the mirrors of its LUNs.
type Transport interface {
	// Dial opens a pipelined connection to node's replication Handler.
	Dial(ctx context.Context, node NodeID) (Conn, error)
}

// Conn is a pipelined request/reply connection. Requests are delivered in
// the order of Send calls; many may be outstanding.
type Conn interface {
	// Send queues req (its ReqID is assigned by the Conn) and returns
	// without waiting for the reply (it may write it to the network in
	// the caller's goroutine). done is called exactly once, from another goroutine, with the
	// reply or with the error that broke the connection. After a
	// connection error every later Send fails the same way.
	Send(req *Message, done func(*Message, error))
	// Close fails outstanding requests with ErrClosed.
	Close() error
}

// QueueConn is an optional Conn capability: Queue adds a request like Send
// but leaves it in the Conn's buffer; Flush writes everything queued. The
// owner queues a write to every mirror under its lock (which fixes the
// order of sequence numbers) and flushes after releasing it, so the
// syscalls happen outside the lock and without a hand-off to another
// goroutine.
type QueueConn interface {
	Conn
	Queue(req *Message, done func(*Message, error))
	Flush()
}
