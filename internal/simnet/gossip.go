package simnet

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipTransport is a memberlist.Transport on a host: packets are simnet
// datagrams (dropped across a cut, as UDP is) and streams simnet
// connections (held across a cut, as TCP is), on one port number, as
// memberlist's own NetTransport uses one for UDP and TCP.
type GossipTransport struct {
	host *Host
	ln   *Listener
	pc   *PacketConn

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

var _ memberlist.Transport = (*GossipTransport)(nil)

// GossipTransport listens for streams and packets on addr (as Listen;
// port 0 picks one free for both). Set it as memberlist.Config.Transport;
// memberlist advertises the host's IP and this port. Shutdown (memberlist
// calls it) closes both.
func (h *Host) GossipTransport(addr string) (*GossipTransport, error) {
	ln, err := h.Listen(addr)
	if err != nil {
		return nil, err
	}
	pc, err := h.ListenPacket(h.Addr(ln.port))
	if err != nil {
		ln.Close()
		return nil, err
	}
	t := &GossipTransport{
		host: h, ln: ln, pc: pc,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// Addr returns "ip:port", the address other members join.
func (t *GossipTransport) Addr() string { return t.host.Addr(t.ln.port) }

// FinalAdvertiseAddr returns ip and port if ip is set (as NetTransport
// does), else the host's IP and the transport's port.
func (t *GossipTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip == "" {
		return t.host.ip.AsSlice(), t.ln.port, nil
	}
	a := net.ParseIP(ip)
	if a == nil {
		return nil, 0, fmt.Errorf("simnet: advertise address %q is not an IP", ip)
	}
	if port == 0 {
		port = t.ln.port
	}
	return a, port, nil
}

// WriteTo sends a packet; one that cannot arrive is dropped silently.
func (t *GossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	_, err := t.pc.WriteToAddr(b, addr)
	return time.Now(), err
}

// PacketCh delivers the packets received.
func (t *GossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout opens a stream (see Host.DialTimeout).
func (t *GossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.host.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// StreamCh delivers the streams accepted.
func (t *GossipTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes the socket and the listener and waits for the
// goroutines that fed the channels.
func (t *GossipTransport) Shutdown() error {
	t.once.Do(func() {
		close(t.done)
		t.ln.Close()
		t.pc.Close()
	})
	t.wg.Wait()
	return nil
}

func (t *GossipTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, MaxDatagram)
	for {
		k, from, err := t.pc.ReadFrom(buf)
		if err != nil {
			return // closed or crashed
		}
		p := &memberlist.Packet{Buf: append([]byte(nil), buf[:k]...), From: from, Timestamp: time.Now()}
		select {
		case t.packetCh <- p:
		case <-t.done:
			return
		}
	}
}

func (t *GossipTransport) acceptStreams() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		select {
		case t.streamCh <- c:
		case <-t.done:
			c.Close()
			return
		}
	}
}
