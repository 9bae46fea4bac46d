package replication

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"os"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/hatgt/hatgt/blockstore"
)

// allocatedBy returns the bytes the process allocated while f ran (f's
// own, plus whatever other goroutines allocated meanwhile: tests compare
// it with a size many times larger).
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// claimHeader is the header of a write announcing a payload of n bytes,
// with a valid header checksum (anyone can compute one).
func claimHeader(n uint32) []byte {
	h := AppendMessage(nil, &Message{Type: MsgWrite, LUN: testLUN, Epoch: 1, Seq: 1, Length: uint64(n)})
	binary.BigEndian.PutUint32(h[56:], n)
	binary.BigEndian.PutUint32(h[64:], crc32.Checksum(h[:64], castagnoli))
	return h
}

// A header that announces a large payload costs the reader what really
// arrives, not what was announced: 16 MiB announced, 1000 bytes sent.
func TestReadMessageBufAllocatesAsBytesArrive(t *testing.T) {
	stream := append(claimHeader(MaxPayload), make([]byte, 1000)...)
	var err error
	n := allocatedBy(func() { _, _, err = ReadMessageBuf(bytes.NewReader(stream), 0, nil) })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated payload: %v, want io.ErrUnexpectedEOF", err)
	}
	if n > 1<<20 {
		t.Fatalf("reading a header that announces %d bytes (1000 sent) allocated %d bytes", MaxPayload, n)
	}
	// A payload that does arrive is read whole through the growing buffer,
	// into the buffer given when it fits, and its checksum is checked.
	want := pattern(3, 300<<10)
	frame := AppendMessage(nil, &Message{Type: MsgWrite, LUN: 1, Epoch: 1, Seq: 1, Length: uint64(len(want)), Payload: want})
	m, buf, err := ReadMessageBuf(bytes.NewReader(frame), 0, make([]byte, 10))
	if err != nil || !bytes.Equal(m.Payload, want) || cap(buf) < len(want) {
		t.Fatalf("grown read: %v, payload equal %v, buffer cap %d", err, err == nil && bytes.Equal(m.Payload, want), cap(buf))
	}
	frame[len(frame)-1] ^= 1
	if _, _, err := ReadMessageBuf(bytes.NewReader(frame), 0, nil); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("corrupt grown payload: %v, want ErrBadMessage", err)
	}
	if _, _, err := ReadMessageBuf(bytes.NewReader(frame), 4096, nil); !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrBadMessage) {
		t.Fatalf("payload above the reader's limit: %v, want ErrTooLarge", err)
	}
}

// A raw client announces the largest payload the wire allows, with a valid
// header checksum, and sends nothing more: the server refuses the frame
// without allocating its payload and closes the connection.
func TestTCPServerRefusesOversizeFrame(t *testing.T) {
	c := newTCPCluster(t, 65536, "a")
	nc, err := net.Dial("tcp", c.addrs["a"])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The deadline only turns a server that waits for the payload into a
	// failure instead of a hang; a correct one closes at once.
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var rerr error
	n := allocatedBy(func() {
		if _, err := nc.Write(claimHeader(MaxPayload)); err != nil {
			t.Fatal(err)
		}
		_, rerr = nc.Read(make([]byte, 1))
	})
	if rerr == nil || errors.Is(rerr, os.ErrDeadlineExceeded) {
		t.Fatalf("server did not close the connection: %v", rerr)
	}
	if n > 4<<20 {
		t.Fatalf("a frame announcing %d bytes made the process allocate %d bytes", MaxPayload, n)
	}
	// The server still serves others.
	conn, err := c.transport().Dial(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if st := sendOne(t, conn, &Message{Type: MsgHello, LUN: testLUN, Epoch: 1}); st != StatusOK {
		t.Fatalf("hello after the refused frame: %v", st)
	}
}

// A frame within the server's limit is served; one above a lowered limit
// closes its connection.
func TestTCPServerMaxPayload(t *testing.T) {
	m := NewMirror(nil)
	m.AddLUN(testLUN, blockstore.NewMemory(1<<20), 1)
	srv, addr := serveMirror(t, m, func(s *TCPServer) { s.SetMaxPayload(64 << 10) })
	_ = srv
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	ok := AppendMessage(nil, &Message{Type: MsgWrite, LUN: testLUN, Epoch: 1, Seq: 1, Length: 64 << 10, Payload: make([]byte, 64<<10)})
	nc.Write(ok)
	if rep, err := ReadMessage(r, 0); err != nil || rep.Status != StatusOK {
		t.Fatalf("write at the limit: %+v %v", rep, err)
	}
	nc.Write(AppendMessage(nil, &Message{Type: MsgWrite, LUN: testLUN, Epoch: 1, Seq: 2, Length: 64<<10 + 1, Payload: make([]byte, 64<<10+1)}))
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if rep, err := ReadMessage(r, 0); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write above the limit: reply %+v, err %v; want the connection closed", rep, err)
	}
}

// Connections beyond SetMaxConns are closed when accepted; the ones served
// keep working, and a slot freed is taken again.
func TestTCPServerMaxConns(t *testing.T) {
	m := NewMirror(nil)
	m.AddLUN(testLUN, blockstore.NewMemory(1<<20), 1)
	_, addr := serveMirror(t, m, func(s *TCPServer) { s.SetMaxConns(1) })
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	hello := AppendMessage(nil, &Message{Type: MsgHello, LUN: testLUN, Epoch: 1})
	first.Write(hello)
	r1 := bufio.NewReader(first)
	if rep, err := ReadMessage(r1, 0); err != nil || rep.Status != StatusOK {
		t.Fatalf("first connection: %+v %v", rep, err)
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.Write(hello)
	second.SetReadDeadline(time.Now().Add(30 * time.Second))
	if rep, err := ReadMessage(bufio.NewReader(second), 0); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection beyond the limit: reply %+v, err %v; want it closed", rep, err)
	}
	first.Write(hello)
	if rep, err := ReadMessage(r1, 0); err != nil || rep.Status != StatusOK {
		t.Fatalf("first connection after the refusal: %+v %v", rep, err)
	}
	first.Close()
	waitUntil(t, func() bool {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer nc.Close()
		nc.Write(hello)
		rep, err := ReadMessage(bufio.NewReader(nc), 0)
		return err == nil && rep.Status == StatusOK
	})
}

// A verify request names up to MaxPayload bytes in a 68-byte frame: the
// mirror hashes them in pieces instead of allocating them.
func TestMirrorVerifyDoesNotAllocateTheRegion(t *testing.T) {
	m := NewMirror(nil)
	m.AddLUN(testLUN, blockstore.NewMemory(MaxPayload), 1)
	var rep *Message
	n := allocatedBy(func() {
		rep = m.Handle(&Message{Type: MsgVerify, LUN: testLUN, Epoch: 1, Length: MaxPayload})
	})
	if rep.Status != StatusOK || len(rep.Payload) != 32 {
		t.Fatalf("verify: %+v", rep)
	}
	if n > 2<<20 {
		t.Fatalf("verifying %d bytes allocated %d bytes", MaxPayload, n)
	}
	want, err := regionSum(blockstore.NewMemory(MaxPayload), 0, MaxPayload)
	if err != nil || !bytes.Equal(rep.Payload, want[:]) {
		t.Fatalf("digest differs from regionSum's: %v", err)
	}
}

func serveMirror(t *testing.T, m *Mirror, setup func(*TCPServer)) (*TCPServer, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewTCPServer(m.Handle, nil)
	if setup != nil {
		setup(srv)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv, ln.Addr().String()
}

// sendOne sends req on conn and returns the reply's status.
func sendOne(t *testing.T, conn Conn, req *Message) Status {
	t.Helper()
	type res struct {
		m   *Message
		err error
	}
	ch := make(chan res, 1)
	conn.Send(req, func(m *Message, err error) { ch <- res{m, err} })
	r := <-ch
	if r.err != nil {
		t.Fatalf("%v: %v", req.Type, r.err)
	}
	return r.m.Status
}

// FuzzReadMessageStream: a stream of arbitrary bytes read frame by frame
// with a small limit and one reused buffer never panics, never hands out a
// payload above the limit nor grows the buffer much beyond it, and agrees
// with DecodeMessage on every frame. With fix set, the checksums of the
// frames in the stream are made valid first, so mutations reach the
// fields behind them (type, status, flags, lengths).
func FuzzReadMessageStream(f *testing.F) {
	var all []byte
	for _, m := range sampleMessages() {
		frame := AppendMessage(nil, m)
		f.Add(frame, false)
		all = append(all, frame...)
	}
	f.Add(all, false)
	f.Add(all, true)
	f.Add(claimHeader(MaxPayload), false)
	f.Add(append(claimHeader(5000), make([]byte, 100)...), true)
	f.Add(AppendMessage(nil, &Message{Type: MsgWrite, LUN: 1, Epoch: 1, Seq: 1, Length: 3000, Payload: pattern(1, 3000)}), true)
	const limit = 4096
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			b = fixChecksums(b)
		}
		r := bytes.NewReader(b)
		var buf []byte
		rest := b
		for {
			m, nbuf, err := ReadMessageBuf(r, limit, buf)
			want, n, derr := DecodeMessage(rest, limit)
			if err != nil {
				if derr == nil {
					t.Fatalf("ReadMessageBuf failed (%v) where DecodeMessage read %+v", err, want)
				}
				if !errors.Is(err, ErrBadMessage) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error class: %v", err)
				}
				return
			}
			if derr != nil {
				t.Fatalf("DecodeMessage failed (%v) where ReadMessageBuf read %+v", derr, m)
			}
			if len(m.Payload) > limit || cap(nbuf) > max(limit, payloadChunk) {
				t.Fatalf("payload %d, buffer %d with a limit of %d", len(m.Payload), cap(nbuf), limit)
			}
			if len(m.Payload) == 0 {
				m.Payload = nil
			}
			if !reflect.DeepEqual(m, want) {
				t.Fatalf("ReadMessageBuf %+v, DecodeMessage %+v", m, want)
			}
			buf, rest = nbuf, rest[n:]
		}
	})
}

// fixChecksums returns a copy of stream with the header and payload
// checksums of each frame (as far as the lengths allow) made valid.
func fixChecksums(stream []byte) []byte {
	b := bytes.Clone(stream)
	for pos := 0; len(b)-pos >= HeaderSize; {
		h := b[pos : pos+HeaderSize]
		end := pos + HeaderSize + int(binary.BigEndian.Uint32(h[56:]))
		if end <= len(b) {
			binary.BigEndian.PutUint32(h[60:], crc32.Checksum(b[pos+HeaderSize:end], castagnoli))
		}
		binary.BigEndian.PutUint32(h[64:], crc32.Checksum(h[:64], castagnoli))
		pos = end
	}
	return b
}
