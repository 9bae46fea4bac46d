package scsi

import (
	"encoding/binary"
)

// Logical block provisioning (SBC-4 4.7): UNMAP, WRITE SAME (10/16) with
// or without the UNMAP bit, GET LBA STATUS. Provisioning is on when the LU
// is configured thin and its backend can deallocate (Unmapper);
// deallocated blocks read back as zeros (LBPRZ=1). ANCHOR is not
// supported (ANC_SUP=0). WSNZ=1: a WRITE SAME of zero blocks is an invalid
// field, never "to the end of the medium".
func thinCommands() []opInfo {
	return []opInfo{
		{name: "UNMAP", opcode: 0x42, cdbLen: 10,
			usage: []byte{0x42, 0x01, 0x00, 0x00, 0x00, 0x00, 0x1f, 0xff, 0xff, 0x07},
			flags: opWrite, fn: unmapCmd},
		{name: "WRITE SAME(10)", opcode: 0x41, cdbLen: 10,
			usage: []byte{0x41, 0xf8, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07},
			flags: opWrite, fn: writeSame10},
		{name: "WRITE SAME(16)", opcode: 0x93, cdbLen: 16,
			usage: []byte{0x93, 0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07},
			flags: opWrite, fn: writeSame16},
		{name: "GET LBA STATUS", opcode: 0x9e, sa: 0x12, hasSA: true, cdbLen: 16,
			usage: []byte{0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07},
			flags: opReadLike, fn: getLBAStatus},
	}
}

// Limits reported in the Block Limits VPD page (0xB0).
const (
	maxUnmapLBACount        = 0x400000 // blocks per UNMAP descriptor range total
	maxUnmapDescriptorCount = 256
	// maxWriteSameBytes bounds the work of one WRITE SAME (MAXIMUM WRITE
	// SAME LENGTH is this in blocks): 64 MiB, about LIO's 0xFFFF blocks.
	// Initiators split zeroing to it (Linux's write_same_max_bytes). It
	// was 4 GiB, so that NUMBER OF LOGICAL BLOCKS 0 zeroed a whole small
	// LU in one command; on a replicated LUN that command wrote 1 GiB to
	// three copies at once, held its range for seconds and filled the
	// page cache with gigabytes to write back, behind which the Raft log's
	// fsync waited until the owner's lease ran out (CI, twice).
	maxWriteSameBytes = 64 << 20
	// writeSameNonZero is the WSNZ bit of the Block Limits page. With it
	// clear, NUMBER OF LOGICAL BLOCKS 0 means "to the end of the LU".
	writeSameNonZero = false
)

// maxWriteSameBlocks is MAXIMUM WRITE SAME LENGTH in logical blocks.
func (lu *LU) maxWriteSameBlocks() uint64 { return maxWriteSameBytes >> lu.shift }

// writeSameChunk bounds the buffer WRITE SAME and SANITIZE fill with the
// repeated block: one backend call per chunk.
const writeSameChunk = 1 << 20

// thin reports whether logical block provisioning is enabled: LBPME in READ
// CAPACITY (16), LBPU/LBPWS/LBPWS10 in VPD 0xB2.
func (lu *LU) thin() bool {
	if !lu.cfg.Thin {
		return false
	}
	_, ok := lu.backend.(Unmapper)
	return ok
}

// unmapBlocks deallocates [lba, lba+n); the range reads back as zeros.
// Like writeCached, it leaves durability to a final settle.
func (lu *LU) unmapBlocks(lba, n uint64) error {
	if n == 0 {
		return nil
	}
	u, ok := lu.backend.(Unmapper)
	if !ok {
		return NewSense(KeyIllegalRequest, ASCInvalidOpcode)
	}
	if err := u.Unmap(int64(lba<<lu.shift), int64(n<<lu.shift)); err != nil {
		return lu.backendSense(err, false)
	}
	return nil
}

// writeRepeated writes block (one logical block) to every block of
// [lba, lba+n), a chunk of up to writeSameChunk bytes per backend call;
// without a write cache the whole range is durable (one flush) before it
// returns.
func (lu *LU) writeRepeated(block []byte, lba, n uint64) error {
	bs := uint64(len(block))
	per := uint64(writeSameChunk) / bs
	if per == 0 {
		per = 1
	}
	if per > n {
		per = n
	}
	buf := make([]byte, per*bs)
	for i := uint64(0); i < per; i++ {
		copy(buf[i*bs:], block)
	}
	for n > 0 {
		c := min(n, per)
		if err := lu.writeCached(buf[:c*bs], lba); err != nil {
			return err
		}
		lba += c
		n -= c
	}
	return lu.settle()
}

// writeCached writes p at lba without making it durable: callers that
// write a range in many calls end with settle.
func (lu *LU) writeCached(p []byte, lba uint64) error {
	if _, err := lu.backend.WriteAt(p, int64(lba<<lu.shift)); err != nil {
		return lu.backendSense(err, false)
	}
	return nil
}

// settle makes writeCached data durable when the LU has no write cache
// (write-through), as a single writeBlocks would have.
func (lu *LU) settle() error {
	if lu.cfg.WriteCache {
		return nil
	}
	return lu.flush()
}

// unmapCmd implements UNMAP (SBC-4 5.32).
func unmapCmd(t *task) error {
	if err := needCDB(t, 10); err != nil {
		return err
	}
	lu := t.lu
	if !lu.thin() {
		return NewSense(KeyIllegalRequest, ASCInvalidOpcode)
	}
	if t.cdb[1]&0x01 != 0 { // ANCHOR: ANC_SUP=0
		return InvalidCDBField(1, 0)
	}
	plen := int(binary.BigEndian.Uint16(t.cdb[7:]))
	if plen == 0 {
		return nil
	}
	if plen < 8 {
		return NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	p := t.cmd.Data
	if len(p) > plen {
		p = p[:plen]
	}
	if len(p) < 8 {
		return NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	dataLen := int(binary.BigEndian.Uint16(p[0:]))
	bdLen := int(binary.BigEndian.Uint16(p[2:]))
	if dataLen < 6 || bdLen > dataLen-6 {
		return InvalidParamField(0, -1)
	}
	if bdLen > len(p)-8 {
		return NewSense(KeyIllegalRequest, ASCParameterListLength)
	}
	// A trailing partial descriptor is ignored (SBC-4 5.32.2).
	count := bdLen / 16
	if count > maxUnmapDescriptorCount {
		return InvalidParamField(2, -1)
	}
	type extent struct{ lba, n uint64 }
	exts := make([]extent, 0, count)
	for i := 0; i < count; i++ {
		d := p[8+16*i:]
		lba := binary.BigEndian.Uint64(d)
		n := uint64(binary.BigEndian.Uint32(d[8:]))
		if n > maxUnmapLBACount {
			return InvalidParamField(8+16*i+8, -1)
		}
		if err := lu.checkRange(lba, n); err != nil {
			return err
		}
		exts = append(exts, extent{lba, n})
	}
	for _, e := range exts {
		if e.n == 0 {
			continue
		}
		unlock := lu.lockRange(e.lba, e.n)
		err := lu.unmapBlocks(e.lba, e.n)
		unlock()
		if err != nil {
			return err
		}
	}
	return lu.settle()
}

func writeSame10(t *task) error {
	if err := needCDB(t, 10); err != nil {
		return err
	}
	if t.cdb[1]&0x01 != 0 { // bit 0 reserved in WRITE SAME (10)
		return InvalidCDBField(1, 0)
	}
	lba := uint64(binary.BigEndian.Uint32(t.cdb[2:]))
	n := uint64(binary.BigEndian.Uint16(t.cdb[7:]))
	return writeSame(t, lba, n, 7)
}

func writeSame16(t *task) error {
	if err := needCDB(t, 16); err != nil {
		return err
	}
	lba := binary.BigEndian.Uint64(t.cdb[2:])
	n := uint64(binary.BigEndian.Uint32(t.cdb[10:]))
	return writeSame(t, lba, n, 10)
}

// writeSame implements WRITE SAME (10) and (16) (SBC-4 5.48, 5.49). nField
// is the CDB offset of NUMBER OF LOGICAL BLOCKS.
func writeSame(t *task, lba, n uint64, nField int) error {
	lu := t.lu
	flags := t.cdb[1]
	anchor, unmap, ndob := flags&0x10 != 0, flags&0x08 != 0, flags&0x01 != 0
	switch {
	case flags&0xe0 != 0: // WRPROTECT: no protection information
		return InvalidCDBField(1, 7)
	case flags&0x06 != 0: // obsolete PBDATA / LBDATA
		return InvalidCDBField(1, 2)
	case anchor: // ANC_SUP=0
		return InvalidCDBField(1, 4)
	case unmap && !lu.thin():
		return InvalidCDBField(1, 3)
	}
	if n == 0 {
		if writeSameNonZero {
			return InvalidCDBField(nField, -1)
		}
		if lba > lu.blocks {
			return NewSense(KeyIllegalRequest, ASCLBAOutOfRange)
		}
		n = lu.blocks - lba
	}
	if n > lu.maxWriteSameBlocks() {
		return InvalidCDBField(nField, -1)
	}
	if err := lu.checkRange(lba, n); err != nil {
		return err
	}
	bs := uint64(lu.cfg.BlockSize)
	var block []byte
	if ndob {
		if err := needDataOut(t, 0, 1); err != nil {
			return err
		}
		block = make([]byte, bs)
	} else {
		if err := needDataOut(t, bs, nField); err != nil {
			return err
		}
		block = t.cmd.Data
	}
	unlock := lu.lockRange(lba, n)
	defer unlock()
	if unmap {
		// The UNMAP bit deallocates whatever the data (as LIO does and
		// libiscsi's WriteSame*.UnmapUntilEnd expects); with LBPRZ=1
		// the blocks then read back as zeros.
		if err := lu.unmapBlocks(lba, n); err != nil {
			return err
		}
		return lu.settle()
	}
	return lu.writeRepeated(block, lba, n)
}

// Provisioning status values of an LBA status descriptor.
const (
	lbaMapped      = 0
	lbaDeallocated = 1
)

// maxLBAStatusDescriptors bounds one GET LBA STATUS answer.
const maxLBAStatusDescriptors = 512

// getLBAStatus implements GET LBA STATUS (SBC-4 5.8): descriptors of
// consecutive mapped / deallocated extents from the starting LBA, as many
// as the allocation length holds.
func getLBAStatus(t *task) error {
	if err := needCDB(t, 16); err != nil {
		return err
	}
	lu := t.lu
	lba := binary.BigEndian.Uint64(t.cdb[2:])
	alloc := binary.BigEndian.Uint32(t.cdb[10:])
	if lba >= lu.blocks {
		return NewSense(KeyIllegalRequest, ASCLBAOutOfRange)
	}
	want := 1
	if alloc > 8+16 {
		want = min(int(alloc-8)/16, maxLBAStatusDescriptors)
	}
	em, _ := lu.backend.(ExtentMapper)
	if !lu.thin() {
		em = nil
	}
	out := make([]byte, 8, 8+16*want)
	for i := 0; i < want && lba < lu.blocks; i++ {
		status, n := byte(lbaMapped), lu.blocks-lba
		if em != nil {
			mapped, length, err := em.MappedExtent(int64(lba << lu.shift))
			if err != nil {
				return lu.backendSense(err, true)
			}
			if !mapped {
				status = lbaDeallocated
			}
			n = max(uint64(length)>>lu.shift, 1)
			n = min(n, lu.blocks-lba)
		}
		n = min(n, 0xffffffff)
		// Merge with the previous descriptor when the backend split an
		// extent of one state at a finer granularity.
		if k := len(out); k > 8 && out[k-4] == status {
			prevN := uint64(binary.BigEndian.Uint32(out[k-8:]))
			if prevN+n <= 0xffffffff {
				binary.BigEndian.PutUint32(out[k-8:], uint32(prevN+n))
				lba += n
				i--
				continue
			}
		}
		var d [16]byte
		binary.BigEndian.PutUint64(d[0:], lba)
		binary.BigEndian.PutUint32(d[8:], uint32(n))
		d[12] = status
		out = append(out, d[:]...)
		lba += n
	}
	binary.BigEndian.PutUint32(out[0:], uint32(len(out)-4))
	t.dataIn(out, int(alloc))
	return nil
}
