package target

import (
	"encoding/binary"
	"hash/crc32"
	"io"
)

// readPDU reads the next PDU of the full feature phase. A Data-Out whose
// task still needs data is read straight into the task's buffer (no
// intermediate copy: this is the bulk of a write's bytes); every other PDU
// goes through ReadPDU. Errors are ReadPDU's.
func (c *conn) readPDU() (*PDU, error) {
	maxData := c.params.TargetMaxRecvDataSegmentLength
	if hdr, err := c.br.Peek(BHSLen); err == nil {
		if dst := c.dataOutTarget(hdr, maxData); dst != nil {
			return c.readDataOutInto(dst)
		}
	}
	return ReadPDU(c.br, c.digests, maxData)
}

// dataOutTarget returns where in its task's buffer the data of the
// Data-Out whose header is hdr belongs, or nil to take the ordinary path.
// The task must still be missing data: it cannot start executing (and
// read the buffer) before this reader, the only one that fills it, has
// filed the PDU. fileDataLocked validates the PDU afterwards; a PDU that
// fails validation fails its task, so bytes it wrote are never used. Data
// beyond what the budget reserved for the task (bufLimit) takes the
// ordinary path, where validation rejects it.
func (c *conn) dataOutTarget(hdr []byte, maxData uint32) []byte {
	if Opcode(hdr[0]&0x3f) != OpDataOut || hdr[4] != 0 {
		return nil
	}
	dl := uint32(hdr[5])<<16 | uint32(hdr[6])<<8 | uint32(hdr[7])
	if dl == 0 || dl > maxData {
		return nil
	}
	t := c.sess.task(binary.BigEndian.Uint32(hdr[16:20]))
	if t == nil || t.conn != c {
		return nil
	}
	off := binary.BigEndian.Uint32(hdr[offBufOffset : offBufOffset+4])
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.write || t.started || t.aborted || t.failed || t.got >= t.edtl ||
		uint64(off)+uint64(dl) > uint64(t.bufLimit) {
		return nil
	}
	t.grow(int(off + dl))
	return t.buf[off : off+dl : off+dl]
}

// readDataOutInto reads a Data-Out PDU (header already peeked) with its
// data segment going into dst.
func (c *conn) readDataOutInto(dst []byte) (*PDU, error) {
	p := &PDU{}
	if _, err := io.ReadFull(c.br, p.BHS[:]); err != nil {
		return nil, err
	}
	var tail [8]byte
	if c.digests.Header {
		if _, err := io.ReadFull(c.br, tail[:4]); err != nil {
			return nil, unexpectedEOF(err)
		}
		if binary.LittleEndian.Uint32(tail[:4]) != CRC32C(p.BHS[:]) {
			return p, ErrHeaderDigest
		}
	}
	if _, err := io.ReadFull(c.br, dst); err != nil {
		return nil, unexpectedEOF(err)
	}
	p.Data = dst
	padN := pad4(len(dst)) - len(dst)
	n := padN
	if c.digests.Data {
		n += 4
	}
	if _, err := io.ReadFull(c.br, tail[:n]); err != nil {
		return nil, unexpectedEOF(err)
	}
	if c.digests.Data {
		crc := crc32.Update(CRC32C(dst), castagnoli, tail[:padN])
		if binary.LittleEndian.Uint32(tail[padN:n]) != crc {
			return p, ErrDataDigest
		}
	}
	return p, nil
}
