package target

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Opcode is an iSCSI PDU opcode (RFC 7143 section 11.2.1.2), without the
// immediate bit.
type Opcode uint8

// Initiator opcodes.
const (
	OpNopOut       Opcode = 0x00
	OpSCSICommand  Opcode = 0x01
	OpTaskMgmtReq  Opcode = 0x02
	OpLoginReq     Opcode = 0x03
	OpTextReq      Opcode = 0x04
	OpDataOut      Opcode = 0x05
	OpLogoutReq    Opcode = 0x06
	OpSNACKReq     Opcode = 0x10
	OpVendorInit1  Opcode = 0x1c
	OpVendorInitLo Opcode = 0x1c
	OpVendorInitHi Opcode = 0x1e
)

// Target opcodes.
const (
	OpNopIn        Opcode = 0x20
	OpSCSIResponse Opcode = 0x21
	OpTaskMgmtResp Opcode = 0x22
	OpLoginResp    Opcode = 0x23
	OpTextResp     Opcode = 0x24
	OpDataIn       Opcode = 0x25
	OpLogoutResp   Opcode = 0x26
	OpR2T          Opcode = 0x31
	OpAsyncMsg     Opcode = 0x32
	OpReject       Opcode = 0x3f
)

var opcodeNames = map[Opcode]string{
	OpNopOut: "NOP-Out", OpSCSICommand: "SCSI Command", OpTaskMgmtReq: "Task Management Request",
	OpLoginReq: "Login Request", OpTextReq: "Text Request", OpDataOut: "SCSI Data-Out",
	OpLogoutReq: "Logout Request", OpSNACKReq: "SNACK Request",
	OpNopIn: "NOP-In", OpSCSIResponse: "SCSI Response", OpTaskMgmtResp: "Task Management Response",
	OpLoginResp: "Login Response", OpTextResp: "Text Response", OpDataIn: "SCSI Data-In",
	OpLogoutResp: "Logout Response", OpR2T: "R2T", OpAsyncMsg: "Asynchronous Message", OpReject: "Reject",
}

func (o Opcode) String() string {
	if n, ok := opcodeNames[o]; ok {
		return n
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// BHSLen is the length of the Basic Header Segment.
const BHSLen = 48

// ReservedTag is the all-ones Initiator/Target Task Tag value.
const ReservedTag uint32 = 0xffffffff

// PDU is one iSCSI PDU. The BHS is kept as raw bytes with typed accessors, so
// that decoding never loses a field and encoding is a copy. AHS holds the
// additional header segments (without padding); Data the data segment
// (without padding).
type PDU struct {
	BHS  [BHSLen]byte
	AHS  []byte
	Data []byte
}

// NewPDU returns a PDU with the given opcode and the Final bit clear.
func NewPDU(op Opcode) *PDU {
	p := &PDU{}
	p.BHS[0] = byte(op) & 0x3f
	return p
}

func (p *PDU) Opcode() Opcode      { return Opcode(p.BHS[0] & 0x3f) }
func (p *PDU) Immediate() bool     { return p.BHS[0]&0x40 != 0 }
func (p *PDU) SetImmediate(v bool) { setBit(&p.BHS[0], 0x40, v) }

// Flags returns byte 1 (opcode specific flags; bit 7 is Final for most PDUs).
func (p *PDU) Flags() byte     { return p.BHS[1] }
func (p *PDU) SetFlags(f byte) { p.BHS[1] = f }
func (p *PDU) Final() bool     { return p.BHS[1]&0x80 != 0 }
func (p *PDU) SetFinal(v bool) { setBit(&p.BHS[1], 0x80, v) }

// TotalAHSLength is in 4-byte words (byte 4).
func (p *PDU) TotalAHSLength() int { return int(p.BHS[4]) * 4 }

// DataSegmentLength is the length of the data segment without padding
// (bytes 5-7).
func (p *PDU) DataSegmentLength() uint32 {
	return uint32(p.BHS[5])<<16 | uint32(p.BHS[6])<<8 | uint32(p.BHS[7])
}

// LUN returns bytes 8-15 raw (SAM LUN structure).
func (p *PDU) LUN() uint64     { return binary.BigEndian.Uint64(p.BHS[8:16]) }
func (p *PDU) SetLUN(l uint64) { binary.BigEndian.PutUint64(p.BHS[8:16], l) }

// ITT is the Initiator Task Tag (bytes 16-19).
func (p *PDU) ITT() uint32     { return p.U32(16) }
func (p *PDU) SetITT(v uint32) { p.SetU32(16, v) }

// U32 reads the big-endian 32-bit field at byte offset off of the BHS.
func (p *PDU) U32(off int) uint32 { return binary.BigEndian.Uint32(p.BHS[off : off+4]) }

// SetU32 writes a big-endian 32-bit field at byte offset off of the BHS.
func (p *PDU) SetU32(off int, v uint32) { binary.BigEndian.PutUint32(p.BHS[off:off+4], v) }

// U16 reads the big-endian 16-bit field at byte offset off of the BHS.
func (p *PDU) U16(off int) uint16 { return binary.BigEndian.Uint16(p.BHS[off : off+2]) }

// SetU16 writes a big-endian 16-bit field at byte offset off of the BHS.
func (p *PDU) SetU16(off int, v uint16) { binary.BigEndian.PutUint16(p.BHS[off:off+2], v) }

// Common field offsets. Which of them a PDU carries depends on its opcode.
const (
	offTTT          = 20 // Target Transfer Tag (Data-Out, NOP, R2T, Text, Data-In)
	offExpDataLen   = 20 // Expected Data Transfer Length (SCSI Command)
	offCmdSN        = 24 // CmdSN (initiator PDUs)
	offStatSN       = 24 // StatSN (target PDUs)
	offExpStatSN    = 28 // ExpStatSN (initiator PDUs)
	offExpCmdSN     = 28 // ExpCmdSN (target PDUs)
	offMaxCmdSN     = 32 // MaxCmdSN (target PDUs)
	offDataSN       = 36 // DataSN / R2TSN (Data-In, Data-Out, R2T)
	offBufOffset    = 40 // Buffer Offset (Data-In, Data-Out, R2T)
	offDesiredLen   = 44 // Desired Data Transfer Length (R2T)
	offResidual     = 44 // Residual Count (Data-In, SCSI Response)
	offCDB          = 32 // CDB (SCSI Command), 16 bytes
	offBidiResidual = 40 // Bidirectional Read Residual Count (SCSI Response)
)

func (p *PDU) TTT() uint32              { return p.U32(offTTT) }
func (p *PDU) SetTTT(v uint32)          { p.SetU32(offTTT, v) }
func (p *PDU) CmdSN() uint32            { return p.U32(offCmdSN) }
func (p *PDU) SetCmdSN(v uint32)        { p.SetU32(offCmdSN, v) }
func (p *PDU) ExpStatSN() uint32        { return p.U32(offExpStatSN) }
func (p *PDU) SetExpStatSN(v uint32)    { p.SetU32(offExpStatSN, v) }
func (p *PDU) StatSN() uint32           { return p.U32(offStatSN) }
func (p *PDU) SetStatSN(v uint32)       { p.SetU32(offStatSN, v) }
func (p *PDU) ExpCmdSN() uint32         { return p.U32(offExpCmdSN) }
func (p *PDU) SetExpCmdSN(v uint32)     { p.SetU32(offExpCmdSN, v) }
func (p *PDU) MaxCmdSN() uint32         { return p.U32(offMaxCmdSN) }
func (p *PDU) SetMaxCmdSN(v uint32)     { p.SetU32(offMaxCmdSN, v) }
func (p *PDU) DataSN() uint32           { return p.U32(offDataSN) }
func (p *PDU) SetDataSN(v uint32)       { p.SetU32(offDataSN, v) }
func (p *PDU) BufferOffset() uint32     { return p.U32(offBufOffset) }
func (p *PDU) SetBufferOffset(v uint32) { p.SetU32(offBufOffset, v) }

// ExpectedDataTransferLength of a SCSI Command PDU.
func (p *PDU) ExpectedDataTransferLength() uint32 { return p.U32(offExpDataLen) }

// CDB returns the 16-byte CDB field of a SCSI Command PDU, extended by an
// Extended CDB AHS (type 1) when present.
func (p *PDU) CDB() []byte {
	cdb := append([]byte(nil), p.BHS[offCDB:offCDB+16]...)
	for ahs := p.AHS; len(ahs) >= 4; {
		l := int(binary.BigEndian.Uint16(ahs[0:2]))
		typ := ahs[2]
		end := 3 + l
		if end > len(ahs) {
			break
		}
		if typ == 1 && l >= 1 {
			cdb = append(cdb, ahs[4:end]...)
		}
		end = (end + 3) &^ 3
		if end > len(ahs) {
			break
		}
		ahs = ahs[end:]
	}
	return cdb
}

// Decoding errors. A header digest error means the BHS cannot be trusted
// (RFC 7143 section 7.8: the connection must be dropped or recovered); a data
// digest error lets the target answer with a Reject.
var (
	ErrHeaderDigest    = errors.New("iscsi: header digest mismatch")
	ErrDataDigest      = errors.New("iscsi: data digest mismatch")
	ErrDataSegmentSize = errors.New("iscsi: data segment longer than MaxRecvDataSegmentLength")
	ErrShortPDU        = errors.New("iscsi: truncated PDU")
)

// Digests says which digests a connection has negotiated.
type Digests struct {
	Header bool
	Data   bool
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C computes the iSCSI digest of b.
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func pad4(n int) int { return (n + 3) &^ 3 }

// EncodedLen is the number of bytes Encode will produce.
func (p *PDU) EncodedLen(d Digests) int {
	n := BHSLen + pad4(len(p.AHS))
	if d.Header {
		n += 4
	}
	if len(p.Data) > 0 {
		n += pad4(len(p.Data))
		if d.Data {
			n += 4
		}
	}
	return n
}

// AppendEncode appends the wire form of p to dst, setting TotalAHSLength and
// DataSegmentLength from AHS and Data. Digests are little-endian CRC32C as RFC
// 7143 section 13.1 specifies for the wire (the CRC's natural byte order).
// The header fields bound what can be encoded: AHS at most 1020 bytes and
// Data under 16 MiB (the negotiated MaxRecvDataSegmentLength keeps it far
// below); longer segments are the caller's bug and encode wrong lengths.
func (p *PDU) AppendEncode(dst []byte, d Digests) []byte {
	ahsLen := pad4(len(p.AHS))
	p.BHS[4] = byte(ahsLen / 4)
	dl := len(p.Data)
	p.BHS[5], p.BHS[6], p.BHS[7] = byte(dl>>16), byte(dl>>8), byte(dl)
	start := len(dst)
	dst = append(dst, p.BHS[:]...)
	dst = append(dst, p.AHS...)
	dst = appendZeros(dst, ahsLen-len(p.AHS))
	if d.Header {
		dst = binary.LittleEndian.AppendUint32(dst, CRC32C(dst[start:]))
	}
	if dl > 0 {
		ds := len(dst)
		dst = append(dst, p.Data...)
		dst = appendZeros(dst, pad4(dl)-dl)
		if d.Data {
			dst = binary.LittleEndian.AppendUint32(dst, CRC32C(dst[ds:]))
		}
	}
	return dst
}

// Encode returns the wire form of p.
func (p *PDU) Encode(d Digests) []byte {
	return p.AppendEncode(make([]byte, 0, p.EncodedLen(d)), d)
}

func appendZeros(b []byte, n int) []byte {
	for ; n > 0; n-- {
		b = append(b, 0)
	}
	return b
}

// Decode parses one PDU from the start of b. It returns the PDU and the
// number of bytes it used. maxData bounds the data segment (0: no bound).
// When the data segment is over maxData, Decode returns the PDU with its BHS
// and ErrDataSegmentSize without consuming the segment. Decode is pure: it
// never reads a clock or retains b.
func Decode(b []byte, d Digests, maxData uint32) (*PDU, int, error) {
	if len(b) < BHSLen {
		return nil, 0, ErrShortPDU
	}
	p := &PDU{}
	copy(p.BHS[:], b[:BHSLen])
	n := BHSLen
	ahsLen := p.TotalAHSLength()
	if len(b) < n+ahsLen {
		return nil, 0, ErrShortPDU
	}
	if ahsLen > 0 {
		p.AHS = append([]byte(nil), b[n:n+ahsLen]...)
	}
	n += ahsLen
	if d.Header {
		if len(b) < n+4 {
			return nil, 0, ErrShortPDU
		}
		if binary.LittleEndian.Uint32(b[n:n+4]) != CRC32C(b[:n]) {
			return p, n + 4, ErrHeaderDigest
		}
		n += 4
	}
	dl := p.DataSegmentLength()
	if maxData > 0 && dl > maxData {
		return p, n, ErrDataSegmentSize
	}
	if dl > 0 {
		padded := pad4(int(dl))
		if len(b) < n+padded {
			return nil, 0, ErrShortPDU
		}
		seg := b[n : n+padded]
		p.Data = append([]byte(nil), b[n:n+int(dl)]...)
		n += padded
		if d.Data {
			if len(b) < n+4 {
				return nil, 0, ErrShortPDU
			}
			if binary.LittleEndian.Uint32(b[n:n+4]) != CRC32C(seg) {
				return p, n + 4, ErrDataDigest
			}
			n += 4
		}
	}
	return p, n, nil
}

// ReadPDU reads one PDU from r. Errors are as for Decode, plus any read
// error. After ErrDataSegmentSize the stream is not in sync; the caller must
// drop the connection. After ErrDataDigest the whole PDU has been consumed
// and the stream is still in sync.
func ReadPDU(r io.Reader, d Digests, maxData uint32) (*PDU, error) {
	p := &PDU{}
	if _, err := io.ReadFull(r, p.BHS[:]); err != nil {
		return nil, err
	}
	ahsLen := p.TotalAHSLength()
	var hdr []byte
	if ahsLen > 0 {
		p.AHS = make([]byte, ahsLen)
		if _, err := io.ReadFull(r, p.AHS); err != nil {
			return nil, unexpectedEOF(err)
		}
	}
	if d.Header {
		var dig [4]byte
		if _, err := io.ReadFull(r, dig[:]); err != nil {
			return nil, unexpectedEOF(err)
		}
		hdr = append(append(hdr, p.BHS[:]...), p.AHS...)
		if binary.LittleEndian.Uint32(dig[:]) != CRC32C(hdr) {
			return p, ErrHeaderDigest
		}
	}
	dl := p.DataSegmentLength()
	if maxData > 0 && dl > maxData {
		return p, ErrDataSegmentSize
	}
	if dl > 0 {
		padded := pad4(int(dl))
		extra := 0
		if d.Data {
			extra = 4
		}
		buf := make([]byte, padded+extra)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, unexpectedEOF(err)
		}
		p.Data = buf[:dl:dl]
		if d.Data && binary.LittleEndian.Uint32(buf[padded:]) != CRC32C(buf[:padded]) {
			return p, ErrDataDigest
		}
	}
	return p, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func setBit(b *byte, mask byte, v bool) {
	if v {
		*b |= mask
	} else {
		*b &^= mask
	}
}
