package replication

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

// Wire format. Every message is one frame: a fixed header followed by the
// payload. All integers are big-endian.
//
//	off  size  field
//	 0     4   magic "HRPL"
//	 4     1   version (1)
//	 5     1   type (MsgType)
//	 6     1   status (Status; requests send StatusOK), one of
//	           0 ok, 1 stale-epoch, 2 no-lun, 3 io-error, 4 bad-request,
//	           5 out-of-order, 6 copy-lost, 7 epoch-unknown
//	 7     1   flags (FlagFUA, FlagResync)
//	 8     8   request id: replies carry the id of their request
//	16     8   LUN
//	24     8   epoch
//	32     8   sequence number within the epoch (writes and unmaps)
//	40     8   byte offset
//	48     8   length in bytes (unmap, verify; writes: payload length)
//	56     4   payload length
//	60     4   CRC32C of the payload
//	64     4   CRC32C of bytes 0..63
//
// Requests on one connection are applied in the order they were sent;
// replies may be batched, and are matched by request id.
//
// Payloads: a write's data; a verify reply's 32-byte SHA-256; and the
// copy's generation (invariant 7, see Generation) in hellos:
//
//   - A hello request's payload is empty, or 16 bytes: a new generation
//     for the copy, which the mirror writes into the copy's identity block
//     and makes durable before it answers. The owner sends one when a
//     full copy starts (with FlagFull) and when the first owner of a new
//     LUN names the copies (View.Fresh). Any other length, or 16 zero
//     bytes, is refused (bad-request).
//   - A hello reply's payload is the copy's generation, 16 bytes (all
//     zero: the copy has none), or empty from a mirror whose store keeps
//     no identity (or a build from before identities).
//
// Both were added without a new version: frames decode as before. A
// mirror built before identities ignores a hello's payload and answers
// with none, so an owner whose cluster records identities never counts
// its copy as the recorded one: the copy is dropped from the in-sync set
// and stays out of sync (its full copy stops at the hello) until its node
// is upgraded. An owner built before identities ignores the reply's.
//
// Statuses are only ever added, at the end (epoch-unknown is the latest):
// every frame of an older build decodes unchanged. A decoder refuses a
// status it does not know (ErrBadMessage), so an owner built before a
// status was added drops the connection of a mirror that answers it, as
// it would a failed mirror.
const (
	HeaderSize = 68
	// MaxPayload bounds one message's payload whatever the reader's own
	// limit: a decoder refuses larger frames before allocating.
	MaxPayload = 16 << 20
	// DefaultServerMaxPayload is a TCPServer's payload limit unless
	// SetMaxPayload changes it: the default Config.MaxMessage (1 MiB, the
	// largest payload an owner sends) with some headroom.
	DefaultServerMaxPayload = 1<<20 + 64<<10
	// maxReplyPayload bounds what an owner reads in a reply: the largest
	// is a verify's 32-byte digest.
	maxReplyPayload = 4 << 10

	wireMagic   = 0x4852504c // "HRPL"
	wireVersion = 1
)

// MsgType is the kind of a message.
type MsgType uint8

const (
	// MsgHello announces the sender's epoch for a LUN; the mirror raises
	// its newest epoch to it (fencing older owners) or answers stale. Its
	// Seq is a floor: the owner's last sequence number when it opened this
	// connection; the mirror refuses writes at or below it (late requests
	// of an older connection). Its payload, if any, is the copy's new
	// generation; the reply's is the copy's generation (see above).
	MsgHello MsgType = 1 + iota
	// MsgWrite carries data to write at Offset.
	MsgWrite
	// MsgUnmap deallocates Length bytes at Offset.
	MsgUnmap
	// MsgFlush makes every write the mirror acknowledged durable.
	MsgFlush
	// MsgVerify asks for the SHA-256 of Length bytes at Offset; the reply
	// payload is the 32-byte digest.
	MsgVerify
	// MsgReply answers a request; Status says how it went.
	MsgReply
	msgTypeEnd
)

func (t MsgType) String() string {
	switch t {
	case MsgHello:
		return "hello"
	case MsgWrite:
		return "write"
	case MsgUnmap:
		return "unmap"
	case MsgFlush:
		return "flush"
	case MsgVerify:
		return "verify"
	case MsgReply:
		return "reply"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Status is a reply's outcome.
type Status uint8

const (
	StatusOK Status = iota
	// StatusStaleEpoch: the request's epoch is older than the newest the
	// mirror has seen; the reply's Epoch field carries that newest epoch.
	StatusStaleEpoch
	// StatusNoLUN: the mirror holds no copy of the LUN.
	StatusNoLUN
	// StatusIOError: the mirror's store failed.
	StatusIOError
	// StatusBadRequest: the request is malformed (range, type).
	StatusBadRequest
	// StatusOutOfOrder: a write or unmap whose sequence number is not
	// above the last one the mirror applied in this epoch, or not above
	// the floor of the owner's latest hello: a late request from an
	// older connection, refused so it cannot overwrite newer data.
	StatusOutOfOrder
	// StatusCopyLost: the mirror's node found its copy lost (not the
	// copy the cluster recorded: Mirror.MarkLost): it takes nothing but a
	// hello with FlagFull, which starts a full copy.
	StatusCopyLost
	// StatusEpochUnknown: the request's epoch is newer than any the
	// mirror has seen, and its node has not applied that epoch as
	// committed (Mirror.SetEpochCheck): refused, nothing changed. An
	// owner whose epoch is committed retries (the node's state trails
	// the leader by a few entries); a forged epoch never gets through.
	StatusEpochUnknown
	statusEnd
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusStaleEpoch:
		return "stale-epoch"
	case StatusNoLUN:
		return "no-lun"
	case StatusIOError:
		return "io-error"
	case StatusBadRequest:
		return "bad-request"
	case StatusOutOfOrder:
		return "out-of-order"
	case StatusCopyLost:
		return "copy-lost"
	case StatusEpochUnknown:
		return "epoch-unknown"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Message flags.
const (
	// FlagFUA asks the mirror to make this write durable before replying.
	FlagFUA uint8 = 1 << iota
	// FlagResync marks resync traffic (statistics only).
	FlagResync
	// FlagFull on a hello says the owner will rewrite every region of the
	// copy (its dirty map for the copy is full): a lost copy accepts it.
	// Its payload is the copy's new generation (when the owner's cluster
	// records identities).
	FlagFull
	flagMask = FlagFUA | FlagResync | FlagFull
)

// Message is one replication frame.
type Message struct {
	Type    MsgType
	Status  Status
	Flags   uint8
	ReqID   uint64
	LUN     LUNID
	Epoch   uint64
	Seq     uint64
	Offset  int64
	Length  uint64
	Payload []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// AppendMessage appends m's frame to dst.
func AppendMessage(dst []byte, m *Message) []byte {
	var h [HeaderSize]byte
	binary.BigEndian.PutUint32(h[0:], wireMagic)
	h[4] = wireVersion
	h[5] = byte(m.Type)
	h[6] = byte(m.Status)
	h[7] = m.Flags
	binary.BigEndian.PutUint64(h[8:], m.ReqID)
	binary.BigEndian.PutUint64(h[16:], uint64(m.LUN))
	binary.BigEndian.PutUint64(h[24:], m.Epoch)
	binary.BigEndian.PutUint64(h[32:], m.Seq)
	binary.BigEndian.PutUint64(h[40:], uint64(m.Offset))
	binary.BigEndian.PutUint64(h[48:], m.Length)
	binary.BigEndian.PutUint32(h[56:], uint32(len(m.Payload)))
	binary.BigEndian.PutUint32(h[60:], crc32.Checksum(m.Payload, castagnoli))
	binary.BigEndian.PutUint32(h[64:], crc32.Checksum(h[:64], castagnoli))
	dst = append(dst, h[:]...)
	return append(dst, m.Payload...)
}

// header is a decoded, checked header.
type header struct {
	m          Message
	payloadLen int
	payloadCRC uint32
}

func decodeHeader(h []byte, maxPayload int) (header, error) {
	var d header
	if binary.BigEndian.Uint32(h[0:]) != wireMagic {
		return d, fmt.Errorf("%w: magic %#x", ErrBadMessage, binary.BigEndian.Uint32(h[0:]))
	}
	if crc := crc32.Checksum(h[:64], castagnoli); crc != binary.BigEndian.Uint32(h[64:]) {
		return d, fmt.Errorf("%w: header checksum", ErrBadMessage)
	}
	if h[4] != wireVersion {
		return d, fmt.Errorf("%w: version %d", ErrBadMessage, h[4])
	}
	t, st, fl := MsgType(h[5]), Status(h[6]), h[7]
	if t == 0 || t >= msgTypeEnd {
		return d, fmt.Errorf("%w: type %d", ErrBadMessage, h[5])
	}
	if st >= statusEnd {
		return d, fmt.Errorf("%w: status %d", ErrBadMessage, h[6])
	}
	if fl&^flagMask != 0 {
		return d, fmt.Errorf("%w: flags %#x", ErrBadMessage, fl)
	}
	n := binary.BigEndian.Uint32(h[56:])
	if maxPayload <= 0 || maxPayload > MaxPayload {
		maxPayload = MaxPayload
	}
	if n > uint32(maxPayload) {
		return d, fmt.Errorf("%w: payload of %d bytes, the limit is %d", ErrTooLarge, n, maxPayload)
	}
	d.m = Message{
		Type:   t,
		Status: st,
		Flags:  fl,
		ReqID:  binary.BigEndian.Uint64(h[8:]),
		LUN:    LUNID(binary.BigEndian.Uint64(h[16:])),
		Epoch:  binary.BigEndian.Uint64(h[24:]),
		Seq:    binary.BigEndian.Uint64(h[32:]),
		Offset: int64(binary.BigEndian.Uint64(h[40:])),
		Length: binary.BigEndian.Uint64(h[48:]),
	}
	d.payloadLen = int(n)
	d.payloadCRC = binary.BigEndian.Uint32(h[60:])
	return d, nil
}

// DecodeMessage decodes the frame at the start of b. It returns the message
// (whose Payload is a copy) and the bytes consumed, ErrShortMessage when b
// holds less than one frame, or an error wrapping ErrBadMessage. maxPayload
// <= 0 means MaxPayload.
func DecodeMessage(b []byte, maxPayload int) (*Message, int, error) {
	if len(b) < HeaderSize {
		return nil, 0, ErrShortMessage
	}
	d, err := decodeHeader(b[:HeaderSize], maxPayload)
	if err != nil {
		return nil, 0, err
	}
	end := HeaderSize + d.payloadLen
	if len(b) < end {
		return nil, 0, ErrShortMessage
	}
	m := d.m
	if d.payloadLen > 0 {
		m.Payload = append([]byte(nil), b[HeaderSize:end]...)
	}
	if crc32.Checksum(m.Payload, castagnoli) != d.payloadCRC {
		return nil, 0, fmt.Errorf("%w: payload checksum", ErrBadMessage)
	}
	return &m, end, nil
}

// ReadMessage reads one frame from r.
func ReadMessage(r io.Reader, maxPayload int) (*Message, error) {
	m, _, err := ReadMessageBuf(r, maxPayload, nil)
	return m, err
}

// ReadMessageBuf is ReadMessage with the payload read into buf (grown when
// too small, as the payload's bytes arrive: see readPayload): the message's
// Payload is valid until buf is used again. It returns the buffer to reuse.
// A reader that applies each request before it reads the next needs no
// payload allocation per request. A header announcing more than maxPayload
// bytes (<= 0: MaxPayload) fails with ErrTooLarge before anything is
// allocated for it.
func ReadMessageBuf(r io.Reader, maxPayload int, buf []byte) (*Message, []byte, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, buf, err
	}
	d, err := decodeHeader(h[:], maxPayload)
	if err != nil {
		return nil, buf, err
	}
	m := d.m
	if d.payloadLen > 0 {
		m.Payload, buf, err = readPayload(r, d.payloadLen, buf)
		if err != nil {
			return nil, buf, err
		}
	}
	if crc32.Checksum(m.Payload, castagnoli) != d.payloadCRC {
		return nil, buf, fmt.Errorf("%w: payload checksum", ErrBadMessage)
	}
	return &m, buf, nil
}

// payloadChunk is the first allocation for a payload that does not fit the
// buffer at hand; the buffer then doubles as bytes arrive.
const payloadChunk = 64 << 10

// readPayload reads n bytes from r into buf (returned as the payload and
// as the buffer to reuse). A buffer too small grows only as the bytes
// arrive, at most doubling what was received, so a header that claims a
// large payload costs the reader at most payloadChunk, or twice what the
// sender really sent, never the claimed size up front.
func readPayload(r io.Reader, n int, buf []byte) (payload, next []byte, err error) {
	if cap(buf) >= n {
		p := buf[:n]
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, buf, unexpectedEOF(err)
		}
		return p, buf, nil
	}
	got := buf[:0]
	for len(got) < n {
		if len(got) == cap(got) {
			grown := make([]byte, len(got), min(n, max(2*cap(got), payloadChunk)))
			copy(grown, got)
			got = grown
		}
		k, err := io.ReadFull(r, got[len(got):min(n, cap(got))])
		got = got[:len(got)+k]
		if err != nil {
			return nil, got[:0], unexpectedEOF(err)
		}
	}
	return got, got, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// reply builds the answer to req.
func reply(req *Message, st Status) *Message {
	return &Message{Type: MsgReply, Status: st, ReqID: req.ReqID, LUN: req.LUN, Epoch: req.Epoch, Seq: req.Seq, Offset: req.Offset, Length: req.Length}
}
