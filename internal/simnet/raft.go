package simnet

import (
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// RaftLayer is a raft.StreamLayer on a host, for raft.NewNetworkTransport:
// Raft's RPCs go over simnet streams and follow the network's faults. Its
// address (Addr) is "ip:port"; give Raft the same string as the server's
// address.
type RaftLayer struct {
	*Listener
}

var _ raft.StreamLayer = (*RaftLayer)(nil)

// RaftLayer listens on addr (as Listen) for Raft.
func (h *Host) RaftLayer(addr string) (*RaftLayer, error) {
	l, err := h.Listen(addr)
	if err != nil {
		return nil, err
	}
	return &RaftLayer{Listener: l}, nil
}

// Dial connects to a Raft server from this layer's host (see
// Host.DialTimeout).
func (l *RaftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := l.host.DialTimeout(string(address), timeout)
	if err != nil {
		return nil, err
	}
	return c, nil
}
