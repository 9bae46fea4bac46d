package simnet

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// Config sizes a Network's buffers. A zero field takes its default.
type Config struct {
	// Window is how many bytes of one direction of a connection may have
	// crossed the link and wait unread at the receiver (its receive
	// buffer). Default 256 KiB.
	Window int
	// SendBuffer is how many bytes of one direction of a connection may
	// wait at the sender, written but not yet across (its send buffer):
	// bytes held by a cut, a pause or a full Window. A Write blocks while
	// it is full. Default 256 KiB.
	SendBuffer int
	// Backlog is how many connections a listener queues for Accept; a
	// dial to a full backlog waits, as a SYN to a full queue is dropped
	// and retried. Default 128.
	Backlog int
	// DatagramQueue is how many datagrams a packet socket queues unread;
	// further ones are dropped, as a full socket buffer drops UDP.
	// Default 64.
	DatagramQueue int
}

func (c Config) withDefaults() Config {
	if c.Window <= 0 {
		c.Window = 256 << 10
	}
	if c.SendBuffer <= 0 {
		c.SendBuffer = 256 << 10
	}
	if c.Backlog <= 0 {
		c.Backlog = 128
	}
	if c.DatagramQueue <= 0 {
		c.DatagramQueue = 64
	}
	return c
}

// Network is an in-memory network of named hosts. Its methods are safe for
// concurrent use. One mutex guards the whole network, so a fault operation
// (Cut, Pause, Crash, ...) is atomic with respect to every transfer: once
// it returns, no byte or datagram crosses against it.
type Network struct {
	cfg Config

	mu     sync.Mutex
	hosts  map[string]*Host
	byIP   map[netip.Addr]*Host
	cuts   map[link]struct{} // directed links that are down
	pipes  map[*pipe]struct{}
	faults signal // fired on every fault change: dials waiting for a link
	nextIP uint32
	st     Stats
}

// link is one direction between two hosts.
type link struct{ from, to *Host }

// New returns an empty network.
func New(cfg Config) *Network {
	return &Network{
		cfg:   cfg.withDefaults(),
		hosts: map[string]*Host{},
		byIP:  map[netip.Addr]*Host{},
		cuts:  map[link]struct{}{},
		pipes: map[*pipe]struct{}{},
	}
}

// AddHost adds a host named name (a node ID, say) with the next free
// address of 10.0.0.0/16 (10.0.0.1 first). Addresses given to Dial and
// Listen may use the name or the IP; connections report the IP, as real
// ones do. A name must be non-empty, unique, not an IP and without ':'.
func (n *Network) AddHost(name string) (*Host, error) {
	if name == "" || strings.ContainsAny(name, ":/ ") {
		return nil, fmt.Errorf("simnet: host name %q: want a non-empty name without ':', '/' or spaces", name)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return nil, fmt.Errorf("simnet: host name %q is an IP address: use a name, the network assigns IPs", name)
	}
	if isLoopbackName(name) {
		return nil, fmt.Errorf("simnet: host name %q is reserved: it means the dialing host", name)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.hosts[name]; ok {
		return nil, fmt.Errorf("simnet: host %q exists already", name)
	}
	if n.nextIP >= 0xfffe {
		return nil, fmt.Errorf("simnet: no free address for host %q (65534 hosts)", name)
	}
	n.nextIP++
	ip := netip.AddrFrom4([4]byte{10, 0, byte(n.nextIP >> 8), byte(n.nextIP)})
	h := &Host{
		n: n, name: name, ip: ip,
		listeners: map[int]*Listener{},
		packets:   map[int]*PacketConn{},
		conns:     map[*Conn]struct{}{},
		nextPort:  firstEphemeral,
	}
	n.hosts[name] = h
	n.byIP[ip] = h
	return h, nil
}

// Host returns the host named name, or nil.
func (n *Network) Host(name string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hosts[name]
}

// host looks a name up for a fault operation. n.mu is held.
func (n *Network) host(name string) (*Host, error) {
	h, ok := n.hosts[name]
	if !ok {
		return nil, fmt.Errorf("simnet: no host %q (add it with AddHost)", name)
	}
	return h, nil
}

// up reports whether the link from → to carries packets. A host always
// reaches itself (loopback). n.mu is held.
func (n *Network) up(from, to *Host) bool {
	if from == to {
		return true
	}
	if from.isolated || to.isolated {
		return false
	}
	_, cut := n.cuts[link{from, to}]
	return !cut
}

// resolve maps "host:port" (a host name, its IP, or empty, "localhost",
// 127.0.0.1 or ::1 for self) to a host and port. n.mu is held.
func (n *Network) resolve(self *Host, addr string) (*Host, int, error) {
	hs, port, err := splitAddr(addr)
	if err != nil {
		return nil, 0, err
	}
	if hs == "" || isLoopbackName(hs) {
		return self, port, nil
	}
	if h, ok := n.hosts[hs]; ok {
		return h, port, nil
	}
	if ip, err := netip.ParseAddr(hs); err == nil {
		if ip.IsLoopback() {
			return self, port, nil
		}
		if h, ok := n.byIP[ip.Unmap()]; ok {
			return h, port, nil
		}
	}
	return nil, 0, &net.DNSError{Err: "no such host", Name: hs, IsNotFound: true}
}

// splitAddr splits "host:port" and checks the port.
func splitAddr(addr string) (string, int, error) {
	hs, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, &net.AddrError{Err: "invalid port", Addr: addr}
	}
	return hs, port, nil
}

func isLoopbackName(s string) bool {
	return s == "localhost" || s == "127.0.0.1" || s == "::1"
}

// signal is a broadcast: waiters take ch() under n.mu and block on it
// outside; fire wakes them all. Its channel is made only when someone
// waits.
type signal struct{ c chan struct{} }

func (s *signal) ch() <-chan struct{} {
	if s.c == nil {
		s.c = make(chan struct{})
	}
	return s.c
}

func (s *signal) fire() {
	if s.c != nil {
		close(s.c)
		s.c = nil
	}
}
