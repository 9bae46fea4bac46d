package replication

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func sampleMessages() []*Message {
	return []*Message{
		{Type: MsgHello, LUN: 1, Epoch: 3},
		{Type: MsgWrite, Flags: FlagFUA, ReqID: 9, LUN: 7, Epoch: 2, Seq: 44, Offset: 4096, Length: 5, Payload: []byte("hello")},
		{Type: MsgWrite, Flags: FlagResync, LUN: 1, Epoch: 1, Seq: 1, Offset: 1 << 40, Length: 0},
		{Type: MsgUnmap, LUN: 1, Epoch: 1, Offset: 0, Length: 1 << 30},
		{Type: MsgFlush, LUN: 2, Epoch: 8},
		{Type: MsgVerify, LUN: 2, Epoch: 8, Offset: 65536, Length: 65536},
		{Type: MsgReply, Status: StatusStaleEpoch, ReqID: 1 << 63, LUN: 2, Epoch: 9},
		{Type: MsgReply, Status: StatusOK, ReqID: 5, Payload: bytes.Repeat([]byte{0xab}, 32)},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	var stream []byte
	for _, m := range sampleMessages() {
		stream = AppendMessage(stream, m)
	}
	r := bytes.NewReader(stream)
	rest := stream
	for i, want := range sampleMessages() {
		got, n, err := DecodeMessage(rest, 0)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		rest = rest[n:]
		if len(want.Payload) == 0 {
			want.Payload = nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("message %d: got %+v want %+v", i, got, want)
		}
		got2, err := ReadMessage(r, 0)
		if err != nil || !reflect.DeepEqual(got2, want) {
			t.Fatalf("ReadMessage %d: %+v %v", i, got2, err)
		}
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes left", len(rest))
	}
}

func TestDecodeRejects(t *testing.T) {
	good := AppendMessage(nil, &Message{Type: MsgWrite, LUN: 1, Epoch: 1, Length: 4, Payload: []byte("data")})
	corrupt := func(i int, x byte) []byte {
		b := bytes.Clone(good)
		b[i] ^= x
		return b
	}
	cases := map[string][]byte{
		"magic":           corrupt(0, 1),
		"header checksum": corrupt(20, 1),
		"payload crc":     corrupt(HeaderSize+1, 1),
	}
	for name, b := range cases {
		if _, _, err := DecodeMessage(b, 0); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v, want ErrBadMessage", name, err)
		}
	}
	if _, _, err := DecodeMessage(good[:HeaderSize+2], 0); !errors.Is(err, ErrShortMessage) {
		t.Errorf("truncated payload: %v", err)
	}
	if _, _, err := DecodeMessage(good[:10], 0); !errors.Is(err, ErrShortMessage) {
		t.Errorf("truncated header: %v", err)
	}
	if _, _, err := DecodeMessage(good, 3); !errors.Is(err, ErrBadMessage) {
		t.Errorf("payload above the limit: %v", err)
	}
	// Bad type, status and flags with a valid header checksum.
	for _, m := range []*Message{{Type: 0}, {Type: msgTypeEnd}, {Type: MsgReply, Status: statusEnd}, {Type: MsgWrite, Flags: 0x80}} {
		if _, _, err := DecodeMessage(AppendMessage(nil, m), 0); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%+v: %v", m, err)
		}
	}
}

// FuzzDecodeMessage: arbitrary bytes never panic the decoder, and whatever
// decodes re-encodes to the same bytes.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(AppendMessage(nil, m))
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, HeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, n, err := DecodeMessage(b, 1<<20)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) && !errors.Is(err, ErrShortMessage) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if n > len(b) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		if re := AppendMessage(nil, m); !bytes.Equal(re, b[:n]) {
			t.Fatalf("round trip differs:\n%x\n%x", re, b[:n])
		}
		m2, err := ReadMessage(bytes.NewReader(b), 1<<20)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("ReadMessage disagrees: %+v %v", m2, err)
		}
	})
}

// FuzzMirrorHandle: any decoded request, valid checksum or not, is
// answered by a mirror without panicking, and never applied out of range;
// with an epoch check that knows epoch 1 only (checked), no request moves
// the mirror's newest epoch, and one of a newer epoch is refused.
func FuzzMirrorHandle(f *testing.F) {
	f.Add(uint8(MsgWrite), uint8(0), uint64(1), uint64(1), int64(0), uint64(4), []byte("abcd"), false)
	f.Add(uint8(MsgVerify), uint8(0), uint64(1), uint64(1), int64(-1), uint64(1<<63), []byte{}, false)
	f.Add(uint8(MsgUnmap), uint8(FlagFUA), uint64(1), uint64(0), int64(65536-1), uint64(2), []byte{}, false)
	f.Add(uint8(MsgHello), uint8(0), uint64(1), uint64(1<<64-1), int64(0), uint64(0), []byte{}, true)
	f.Add(uint8(MsgWrite), uint8(0), uint64(1), uint64(2), int64(0), uint64(4), []byte("abcd"), true)
	f.Fuzz(func(t *testing.T, typ, flags uint8, lun, epoch uint64, off int64, length uint64, payload []byte, checked bool) {
		c := newTestCluster(t, 65536, "a")
		m := c.mirrors["a"]
		m.Fence(testLUN, 1)
		if checked {
			m.SetEpochCheck(func(_ LUNID, e uint64) error {
				if e > 1 {
					return ErrEpochUnknown
				}
				return nil
			})
			defer func() {
				if got := m.Newest(testLUN); got != 1 {
					t.Fatalf("a request of epoch %d moved the newest epoch to %d", epoch, got)
				}
			}()
		}
		req := &Message{Type: MsgType(typ), Flags: flags, LUN: LUNID(lun), Epoch: epoch, Offset: off, Length: length, Payload: payload}
		rep := m.Handle(req)
		if rep == nil || rep.Type != MsgReply {
			t.Fatalf("no reply to %+v", req)
		}
		// The reply must survive the wire.
		if _, _, err := DecodeMessage(AppendMessage(nil, rep), 0); err != nil {
			t.Fatalf("reply does not encode: %v", err)
		}
		if rep.Status == StatusOK && (req.Type == MsgWrite || req.Type == MsgUnmap) && !validRange(off, length, 65536) {
			t.Fatalf("applied an out-of-range %v at %d+%d", req.Type, off, length)
		}
		if checked && req.LUN == testLUN && epoch > 1 && rep.Status != StatusEpochUnknown {
			t.Fatalf("%v of epoch %d: %v, want %v", req.Type, epoch, rep.Status, StatusEpochUnknown)
		}
	})
}

// ReadMessageBuf reads every payload into the one buffer it is given,
// growing it only for a payload larger than any before, and still checks
// each payload's CRC.
func TestReadMessageBufReusesItsBuffer(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 8192)
	msgs := []*Message{
		{Type: MsgWrite, LUN: 1, Epoch: 1, Seq: 1, Length: 4096, Payload: bytes.Repeat([]byte{1}, 4096)},
		{Type: MsgWrite, LUN: 1, Epoch: 1, Seq: 2, Length: 16, Payload: bytes.Repeat([]byte{2}, 16)},
		{Type: MsgWrite, LUN: 1, Epoch: 1, Seq: 3, Length: 8192, Payload: big},
		{Type: MsgFlush, LUN: 1, Epoch: 1},
	}
	var stream []byte
	for _, m := range msgs {
		stream = AppendMessage(stream, m)
	}
	r := bytes.NewReader(stream)
	buf := make([]byte, 4096)
	first := &buf[0]
	for i, want := range msgs {
		got, nbuf, err := ReadMessageBuf(r, 0, buf)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got.Payload, want.Payload) || got.Seq != want.Seq || got.Type != want.Type {
			t.Fatalf("message %d: got %+v", i, got)
		}
		if len(want.Payload) > 0 && len(want.Payload) <= 4096 && &got.Payload[0] != first {
			t.Fatalf("message %d: payload of %d bytes not read into the given buffer", i, len(want.Payload))
		}
		buf = nbuf
	}
	if cap(buf) < len(big) {
		t.Fatalf("buffer not grown for the %d-byte payload: cap %d", len(big), cap(buf))
	}
	// A corrupted payload is refused, buffer or not.
	bad := AppendMessage(nil, msgs[0])
	bad[len(bad)-1] ^= 0xff
	if _, _, err := ReadMessageBuf(bytes.NewReader(bad), 0, buf); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("corrupted payload: %v, want ErrBadMessage", err)
	}
}
