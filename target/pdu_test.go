package target

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"testing"
)

// extCDBAHS builds an Extended CDB AHS (RFC 7143 section 11.3.1.2) for the
// CDB bytes beyond the first 16, padded to a multiple of 4.
func extCDBAHS(rest []byte) []byte {
	ahs := make([]byte, 4, 4+len(rest)+3)
	binary.BigEndian.PutUint16(ahs[0:2], uint16(len(rest)+1))
	ahs[2] = 1
	ahs = append(ahs, rest...)
	for len(ahs)%4 != 0 {
		ahs = append(ahs, 0)
	}
	return ahs
}

func testPDUs() map[string]*PDU {
	seq := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + 1)
		}
		return b
	}
	m := map[string]*PDU{}
	nop := NewPDU(OpNopOut)
	nop.SetImmediate(true)
	nop.SetFinal(true)
	nop.SetITT(0x11223344)
	nop.SetTTT(ReservedTag)
	nop.SetCmdSN(9)
	m["nop no data"] = nop
	for _, n := range []int{1, 2, 3, 4, 5, 8191, 8192} {
		p := NewPDU(OpDataOut)
		p.SetFinal(true)
		p.SetITT(uint32(n))
		p.SetBufferOffset(4096)
		p.Data = seq(n)
		m["data-out "+strconv.Itoa(n)] = p
	}
	cmd := NewPDU(OpSCSICommand)
	cmd.SetFinal(true)
	cmd.SetLUN(0x0001000000000000)
	cdb := seq(32)
	copy(cmd.BHS[offCDB:offCDB+16], cdb[:16])
	cmd.AHS = extCDBAHS(cdb[16:])
	cmd.Data = seq(10)
	m["command with extended CDB"] = cmd
	login := NewPDU(OpLoginReq)
	login.SetImmediate(true)
	login.Data = EncodeText([]KV{{"InitiatorName", "iqn.x"}, {"AuthMethod", "None"}})
	m["login"] = login
	return m
}

var allDigests = []Digests{{}, {Header: true}, {Data: true}, {Header: true, Data: true}}

func samePDU(a, b *PDU) bool {
	return a.BHS == b.BHS && bytes.Equal(a.AHS, b.AHS) && bytes.Equal(a.Data, b.Data)
}

func TestPDURoundTrip(t *testing.T) {
	for name, p := range testPDUs() {
		for _, d := range allDigests {
			wire := p.Encode(d)
			if len(wire) != p.EncodedLen(d) || len(wire)%4 != 0 {
				t.Fatalf("%s %+v: %d bytes, EncodedLen %d", name, d, len(wire), p.EncodedLen(d))
			}
			if int(p.DataSegmentLength()) != len(p.Data) || p.TotalAHSLength() != len(p.AHS) {
				t.Fatalf("%s: lengths not set by Encode", name)
			}
			// Two PDUs back to back: Decode must stop at the first.
			stream := append(append([]byte(nil), wire...), wire...)
			q, n, err := Decode(stream, d, 0)
			if err != nil || n != len(wire) {
				t.Fatalf("%s %+v: Decode n=%d err=%v, want %d", name, d, n, err, len(wire))
			}
			if !samePDU(p, q) {
				t.Fatalf("%s %+v: decoded PDU differs", name, d)
			}
			r := bytes.NewReader(stream)
			for i := 0; i < 2; i++ {
				q, err = ReadPDU(r, d, 0)
				if err != nil || !samePDU(p, q) {
					t.Fatalf("%s %+v: ReadPDU #%d: %v", name, d, i, err)
				}
			}
			if _, err := ReadPDU(r, d, 0); err != io.EOF {
				t.Fatalf("%s: ReadPDU at end: %v, want io.EOF", name, err)
			}
		}
	}
}

func TestPDUPaddingIsZero(t *testing.T) {
	p := NewPDU(OpDataOut)
	p.Data = []byte{1, 2, 3, 4, 5}
	wire := p.Encode(Digests{})
	if len(wire) != BHSLen+8 || !bytes.Equal(wire[BHSLen+5:], []byte{0, 0, 0}) {
		t.Fatalf("padding % x", wire[BHSLen:])
	}
	if p.DataSegmentLength() != 5 {
		t.Fatalf("DataSegmentLength %d includes padding", p.DataSegmentLength())
	}
}

func TestPDUDigestsOnWire(t *testing.T) {
	p := NewPDU(OpDataOut)
	p.Data = []byte{1, 2, 3}
	wire := p.Encode(Digests{Header: true, Data: true})
	hd := binary.LittleEndian.Uint32(wire[BHSLen : BHSLen+4])
	if hd != CRC32C(wire[:BHSLen]) {
		t.Fatal("header digest does not cover the BHS")
	}
	dd := binary.LittleEndian.Uint32(wire[len(wire)-4:])
	if dd != CRC32C([]byte{1, 2, 3, 0}) {
		t.Fatal("data digest does not cover the padded data")
	}
	// RFC 3720 appendix B.4 test vector: 32 bytes of zeros.
	if got := CRC32C(make([]byte, 32)); got != 0x8a9136aa {
		t.Fatalf("CRC32C(zeros) = %#x", got)
	}
}

func TestPDUDigestMismatch(t *testing.T) {
	p := testPDUs()["command with extended CDB"]
	d := Digests{Header: true, Data: true}
	wire := p.Encode(d)
	hdrEnd := BHSLen + len(p.AHS)
	tests := []struct {
		name string
		flip int
		want error
	}{
		{"BHS bit", 17, ErrHeaderDigest},
		{"AHS bit", BHSLen + 5, ErrHeaderDigest},
		{"header digest bit", hdrEnd + 1, ErrHeaderDigest},
		{"data bit", hdrEnd + 4 + 3, ErrDataDigest},
		{"padding bit", hdrEnd + 4 + 11, ErrDataDigest},
		{"data digest bit", len(wire) - 1, ErrDataDigest},
	}
	for _, tt := range tests {
		bad := append([]byte(nil), wire...)
		bad[tt.flip] ^= 0x10
		_, n, err := Decode(bad, d, 0)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: Decode err %v, want %v", tt.name, err, tt.want)
		}
		if tt.want == ErrDataDigest && n != len(wire) {
			t.Errorf("%s: Decode consumed %d of %d", tt.name, n, len(wire))
		}
		// After a data digest error the stream stays in sync.
		r := bytes.NewReader(append(bad, wire...))
		q, err := ReadPDU(r, d, 0)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: ReadPDU err %v, want %v", tt.name, err, tt.want)
		}
		if tt.want == ErrDataDigest {
			if q == nil || q.ITT() != p.ITT() {
				t.Errorf("%s: no PDU with the data digest error", tt.name)
			}
			if q, err := ReadPDU(r, d, 0); err != nil || !samePDU(p, q) {
				t.Errorf("%s: next PDU after a data digest error: %v", tt.name, err)
			}
		}
	}
	// Without digests the same flips go unnoticed by the codec.
	plain := p.Encode(Digests{})
	plain[BHSLen+len(p.AHS)+2] ^= 1
	if _, _, err := Decode(plain, Digests{}, 0); err != nil {
		t.Fatalf("no-digest decode: %v", err)
	}
}

func TestPDUOversizeDataSegment(t *testing.T) {
	p := NewPDU(OpDataOut)
	p.Data = make([]byte, 8193)
	for _, d := range allDigests {
		wire := p.Encode(d)
		q, _, err := Decode(wire, d, 8192)
		if !errors.Is(err, ErrDataSegmentSize) || q == nil || q.DataSegmentLength() != 8193 {
			t.Fatalf("%+v: Decode err %v", d, err)
		}
		q, err = ReadPDU(bytes.NewReader(wire), d, 8192)
		if !errors.Is(err, ErrDataSegmentSize) || q == nil {
			t.Fatalf("%+v: ReadPDU err %v", d, err)
		}
		if _, _, err := Decode(wire, d, 8193); err != nil {
			t.Fatalf("%+v: at the limit: %v", d, err)
		}
	}
}

func TestPDUTruncated(t *testing.T) {
	for name, p := range testPDUs() {
		for _, d := range allDigests {
			wire := p.Encode(d)
			for n := 0; n < len(wire); n++ {
				if n > 128 && n < len(wire)-8 && n%512 != 0 {
					continue // long data segments: sample the middle
				}
				if q, _, err := Decode(wire[:n], d, 0); !errors.Is(err, ErrShortPDU) || q != nil {
					t.Fatalf("%s %+v: Decode of %d/%d bytes: %v", name, d, n, len(wire), err)
				}
				_, err := ReadPDU(bytes.NewReader(wire[:n]), d, 0)
				want := io.ErrUnexpectedEOF
				if n == 0 {
					want = io.EOF
				}
				if !errors.Is(err, want) {
					t.Fatalf("%s %+v: ReadPDU of %d/%d bytes: %v, want %v", name, d, n, len(wire), err, want)
				}
			}
		}
	}
}

func TestPDUCDB(t *testing.T) {
	p := testPDUs()["command with extended CDB"]
	q, _, err := Decode(p.Encode(Digests{}), Digests{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 32)
	for i := range want {
		want[i] = byte(i*7 + 1)
	}
	if got := q.CDB(); !bytes.Equal(got, want) {
		t.Fatalf("CDB % x, want % x", got, want)
	}
	// A plain 16-byte CDB; other AHS types are skipped.
	c := NewPDU(OpSCSICommand)
	c.BHS[offCDB] = 0x28
	c.AHS = []byte{0, 5, 2, 0, 1, 2, 3, 4, 0, 0, 0, 0} // bidirectional read length AHS
	if got := c.CDB(); len(got) != 16 || got[0] != 0x28 {
		t.Fatalf("CDB % x", got)
	}
	// A malformed AHS (length beyond the segment) does not panic.
	c.AHS = []byte{0xff, 0xff, 1, 0}
	if got := c.CDB(); len(got) != 16 {
		t.Fatalf("CDB of a malformed AHS: % x", got)
	}
}

func TestPDUAccessors(t *testing.T) {
	p := NewPDU(OpSCSICommand)
	p.SetImmediate(true)
	p.SetFinal(true)
	p.SetLUN(0x0102030405060708)
	p.SetITT(1)
	p.SetCmdSN(2)
	p.SetExpStatSN(3)
	p.SetDataSN(4)
	p.SetBufferOffset(5)
	if p.Opcode() != OpSCSICommand || !p.Immediate() || !p.Final() || p.LUN() != 0x0102030405060708 ||
		p.ITT() != 1 || p.CmdSN() != 2 || p.ExpStatSN() != 3 || p.DataSN() != 4 || p.BufferOffset() != 5 {
		t.Fatalf("accessors: % x", p.BHS)
	}
	p.SetImmediate(false)
	p.SetFinal(false)
	if p.Immediate() || p.Final() || p.Opcode() != OpSCSICommand {
		t.Fatal("clearing bits")
	}
	if OpLoginReq.String() != "Login Request" || Opcode(0x3e).String() != "opcode 0x3e" {
		t.Fatal("opcode names")
	}
}
