package simnet

import (
	"errors"
	"net"
	"testing"
	"time"
)

// readPacket reads one datagram; "" if none comes. It waits long for
// one it expects (want != ""), briefly when it expects none.
func readPacket(t *testing.T, pc *PacketConn, want string) string {
	t.Helper()
	wait := 30 * time.Millisecond
	if want != "" {
		wait = 10 * time.Second
	}
	pc.SetReadDeadline(time.Now().Add(wait))
	defer pc.SetReadDeadline(time.Time{})
	b := make([]byte, 100)
	k, _, err := pc.ReadFrom(b)
	if err != nil {
		if !isTimeout(err) {
			t.Fatalf("read from: %v", err)
		}
		return ""
	}
	return string(b[:k])
}

// Datagrams are dropped, never held: across a cut, from a paused host,
// to a port nobody listens on, and beyond the receiver's queue. A paused
// receiver's queue keeps what arrived, up to its size, for the resume.
func TestDatagrams(t *testing.T) {
	n, hs := newNet(t, Config{DatagramQueue: 3}, "a", "b")
	pa, err := hs["a"].ListenPacket(":7946")
	if err != nil {
		t.Fatal(err)
	}
	pb, err := hs["b"].ListenPacket("b:7946")
	if err != nil {
		t.Fatal(err)
	}
	send := func(pc *PacketConn, msg, to string) {
		t.Helper()
		if k, err := pc.WriteToAddr([]byte(msg), to); err != nil || k != len(msg) {
			t.Fatalf("send %q: %d, %v", msg, k, err)
		}
	}

	send(pa, "hello", "b:7946")
	b := make([]byte, 100)
	k, from, err := pb.ReadFrom(b)
	if err != nil || string(b[:k]) != "hello" || from.String() != hs["a"].Addr(7946) {
		t.Fatalf("got %q from %v, %v", b[:k], from, err)
	}
	if _, err := pb.WriteTo([]byte("reply"), from); err != nil {
		t.Fatal(err)
	}
	if got := readPacket(t, pa, "reply"); got != "reply" {
		t.Fatalf("reply: %q", got)
	}

	n.CutOneWay("a", "b")
	send(pa, "lost", "b:7946")
	send(pb, "b->a", hs["a"].Addr(7946))
	n.HealOneWay("a", "b")
	if got := readPacket(t, pb, ""); got != "" {
		t.Fatalf("a datagram sent across the cut arrived after the heal: %q", got)
	}
	if got := readPacket(t, pa, "b->a"); got != "b->a" {
		t.Fatalf("the other direction: %q", got)
	}

	send(pa, "nobody", "b:1")

	n.Pause("b")
	send(pb, "from paused", "a:7946")
	for _, m := range []string{"1", "2", "3", "4"} {
		send(pa, m, "b:7946")
	}
	if got := readPacket(t, pb, ""); got != "" {
		t.Fatalf("a paused host read %q", got)
	}
	n.Resume("b")
	for _, want := range []string{"1", "2", "3", ""} {
		if got := readPacket(t, pb, want); got != want {
			t.Fatalf("after resume got %q, want %q", got, want)
		}
	}
	if got := readPacket(t, pa, ""); got != "" {
		t.Fatalf("a datagram from a paused host arrived: %q", got)
	}
	st := n.Stats()
	if st.DatagramsSent != 10 || st.DatagramsDelivered != 6 || st.DatagramsDropped != 4 {
		t.Fatalf("stats: sent %d delivered %d dropped %d; want 10, 6, 4", st.DatagramsSent, st.DatagramsDelivered, st.DatagramsDropped)
	}

	if _, err := pa.WriteToAddr(make([]byte, MaxDatagram+1), "b:7946"); err == nil {
		t.Error("an oversized datagram was sent")
	}
	if _, err := pa.WriteToAddr([]byte("x"), "nosuch:1"); err == nil {
		t.Error("a datagram to an unknown host was sent")
	}
	if _, err := hs["a"].ListenPacket(":7946"); err == nil {
		t.Error("two packet sockets on one port")
	}
	pa.Close()
	if _, _, err := pa.ReadFrom(b); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on a closed socket: %v", err)
	}
}
