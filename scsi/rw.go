package scsi

import "bytes"

// maxTransferBytes bounds one READ/WRITE/VERIFY (MAXIMUM TRANSFER LENGTH
// in the Block Limits VPD page, in blocks of the LU's size).
const maxTransferBytes = 32 << 20

// maxTransferBlocks is MAXIMUM TRANSFER LENGTH in logical blocks.
func (lu *LU) maxTransferBlocks() uint64 { return maxTransferBytes >> lu.shift }

var (
	usageRead6   = []byte{opRead6, 0x1f, 0xff, 0xff, 0xff, 0x00}
	usageWrite6  = []byte{opWrite6, 0x1f, 0xff, 0xff, 0xff, 0x00}
	usageRead10  = []byte{opRead10, 0x18, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x00}
	usageWrite10 = []byte{opWrite10, 0x18, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x00}
	usageWV10    = []byte{opWriteVerify10, 0x12, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x00}
	usageVerif10 = []byte{opVerify10, 0x16, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x00}
	usageRead12  = []byte{opRead12, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}
	usageWrite12 = []byte{opWrite12, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}
	usageWV12    = []byte{opWriteVerify12, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}
	usageVerif12 = []byte{opVerify12, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}
	usageRead16  = []byte{opRead16, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}
	usageWrite16 = []byte{opWrite16, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}
	usageWV16    = []byte{opWriteVerify16, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}
	usageVerif16 = []byte{opVerify16, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}
)

func rwCommands() []opInfo {
	return []opInfo{
		{name: "READ(6)", opcode: opRead6, cdbLen: 6, usage: usageRead6, flags: opReadLike, fn: cmdRead},
		{name: "READ(10)", opcode: opRead10, cdbLen: 10, usage: usageRead10, flags: opReadLike, fn: cmdRead},
		{name: "READ(12)", opcode: opRead12, cdbLen: 12, usage: usageRead12, flags: opReadLike, fn: cmdRead},
		{name: "READ(16)", opcode: opRead16, cdbLen: 16, usage: usageRead16, flags: opReadLike, fn: cmdRead},
		{name: "WRITE(6)", opcode: opWrite6, cdbLen: 6, usage: usageWrite6, flags: opWrite, fn: cmdWrite},
		{name: "WRITE(10)", opcode: opWrite10, cdbLen: 10, usage: usageWrite10, flags: opWrite, fn: cmdWrite},
		{name: "WRITE(12)", opcode: opWrite12, cdbLen: 12, usage: usageWrite12, flags: opWrite, fn: cmdWrite},
		{name: "WRITE(16)", opcode: opWrite16, cdbLen: 16, usage: usageWrite16, flags: opWrite, fn: cmdWrite},
		{name: "VERIFY(10)", opcode: opVerify10, cdbLen: 10, usage: usageVerif10, flags: opReadLike, fn: cmdVerify},
		{name: "VERIFY(12)", opcode: opVerify12, cdbLen: 12, usage: usageVerif12, flags: opReadLike, fn: cmdVerify},
		{name: "VERIFY(16)", opcode: opVerify16, cdbLen: 16, usage: usageVerif16, flags: opReadLike, fn: cmdVerify},
		{name: "WRITE AND VERIFY(10)", opcode: opWriteVerify10, cdbLen: 10, usage: usageWV10, flags: opWrite, fn: cmdWriteVerify},
		{name: "WRITE AND VERIFY(12)", opcode: opWriteVerify12, cdbLen: 12, usage: usageWV12, flags: opWrite, fn: cmdWriteVerify},
		{name: "WRITE AND VERIFY(16)", opcode: opWriteVerify16, cdbLen: 16, usage: usageWV16, flags: opWrite, fn: cmdWriteVerify},
	}
}

// blockCDB is the addressing part of a READ/WRITE/VERIFY CDB.
type blockCDB struct {
	lba    uint64
	blocks uint64
	byte1  byte // flags byte (0 for 6-byte CDBs)
	lenOff int  // offset of TRANSFER LENGTH, for the field pointer
}

// decodeBlockCDB reads LBA and transfer length of a 6/10/12/16-byte
// block command (SBC-3 5.x): READ(6)/WRITE(6) have a 21-bit LBA and a
// length of 0 meaning 256.
func decodeBlockCDB(cdb []byte) blockCDB {
	switch len(cdb) {
	case 6:
		n := uint64(cdb[4])
		if n == 0 {
			n = 256
		}
		return blockCDB{lba: uint64(be24(cdb[1:]) & 0x1fffff), blocks: n, lenOff: 4}
	case 10:
		return blockCDB{lba: uint64(be32(cdb[2:])), blocks: uint64(be16(cdb[7:])), byte1: cdb[1], lenOff: 7}
	case 12:
		return blockCDB{lba: uint64(be32(cdb[2:])), blocks: uint64(be32(cdb[6:])), byte1: cdb[1], lenOff: 6}
	default:
		return blockCDB{lba: be64(cdb[2:]), blocks: uint64(be32(cdb[10:])), byte1: cdb[1], lenOff: 10}
	}
}

// checkBlockCDB applies the checks shared by the block commands: no
// protection information (RDPROTECT/WRPROTECT/VRPROTECT must be 0, the LU
// is formatted without it), the transfer length within MAXIMUM TRANSFER
// LENGTH, and the range within the capacity.
func (lu *LU) checkBlockCDB(b blockCDB) error {
	if b.byte1>>5 != 0 {
		return InvalidCDBField(1, 7)
	}
	if b.blocks > lu.maxTransferBlocks() {
		return InvalidCDBField(b.lenOff, -1)
	}
	return lu.checkRange(b.lba, b.blocks)
}

func cmdRead(t *task) error {
	lu := t.lu
	b := decodeBlockCDB(t.cdb)
	if err := lu.checkBlockCDB(b); err != nil {
		return err
	}
	unlock := lu.lockRangeShared(b.lba, b.blocks)
	data, err := lu.readBlocks(b.lba, b.blocks)
	unlock()
	if err != nil {
		return err
	}
	t.data = data
	return nil
}

func cmdWrite(t *task) error {
	lu := t.lu
	b := decodeBlockCDB(t.cdb)
	if err := lu.checkBlockCDB(b); err != nil {
		return err
	}
	data, err := t.dataOutBlocks(b.blocks)
	if err != nil {
		return err
	}
	defer lu.lockRange(b.lba, b.blocks)()
	return lu.writeBlocks(data, b.lba, b.byte1&0x08 != 0)
}

// cmdVerify is VERIFY (10/12/16). BYTCHK 00b checks the range only (the
// medium has no separate verification); 01b compares the Data-Out with
// the medium; 11b compares one block of Data-Out with each block.
func cmdVerify(t *task) error {
	lu := t.lu
	b := decodeBlockCDB(t.cdb)
	if err := lu.checkBlockCDB(b); err != nil {
		return err
	}
	bytchk := (b.byte1 >> 1) & 3
	if bytchk == 2 {
		return InvalidCDBField(1, 2)
	}
	if bytchk == 0 || b.blocks == 0 {
		return nil
	}
	bs := int(lu.cfg.BlockSize)
	want := int(b.blocks) * bs
	if bytchk == 3 {
		want = bs
	}
	out, err := t.dataOut(want)
	if err != nil {
		return err
	}
	unlock := lu.lockRangeShared(b.lba, b.blocks)
	medium, err := lu.readBlocks(b.lba, b.blocks)
	unlock()
	if err != nil {
		return err
	}
	for i := 0; i < int(b.blocks); i++ {
		blk := medium[i*bs : (i+1)*bs]
		ref := out[:bs]
		if bytchk == 1 {
			ref = out[i*bs : (i+1)*bs]
		}
		if !bytes.Equal(blk, ref) {
			off := 0
			for off < bs && blk[off] == ref[off] {
				off++
			}
			e := NewSense(KeyMiscompare, ASCMiscompareDuringVerify)
			e.Info, e.InfoValid = uint64(i*bs+off), true
			if bytchk == 3 {
				e.Info = uint64(off)
			}
			return e
		}
	}
	return nil
}

// cmdWriteVerify is WRITE AND VERIFY (10/12/16): the write is made
// durable before status (the backend reports errors of the write itself,
// which is the verification SBC-3 asks for with BYTCHK 0).
func cmdWriteVerify(t *task) error {
	lu := t.lu
	b := decodeBlockCDB(t.cdb)
	if err := lu.checkBlockCDB(b); err != nil {
		return err
	}
	data, err := t.dataOutBlocks(b.blocks)
	if err != nil {
		return err
	}
	defer lu.lockRange(b.lba, b.blocks)()
	return lu.writeBlocks(data, b.lba, true)
}
