package scsi

func capacityCommands() []opInfo {
	return []opInfo{
		{name: "READ CAPACITY(10)", opcode: opReadCapacity10, cdbLen: 10, fn: cmdReadCapacity10,
			flags: opReadLike | opAllowedUnderPR | opAllowedRR,
			usage: []byte{opReadCapacity10, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x01, 0x00}},
		{name: "READ CAPACITY(16)", opcode: opServiceActionIn, sa: saReadCapacity16, hasSA: true, cdbLen: 16,
			fn: cmdReadCapacity16, flags: opReadLike | opAllowedUnderPR | opAllowedRR,
			usage: []byte{opServiceActionIn, saReadCapacity16, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}},
	}
}

// cmdReadCapacity10 is READ CAPACITY (10): the last LBA (0xFFFFFFFF when
// it does not fit, telling the initiator to use READ CAPACITY (16)) and
// the block length. PMI=0 with a non-zero LBA is invalid (SBC-3 5.15).
func cmdReadCapacity10(t *task) error {
	if t.cdb[8]&1 == 0 && be32(t.cdb[2:]) != 0 {
		return InvalidCDBField(2, -1)
	}
	b := make([]byte, 8)
	last := t.lu.blocks - 1
	if t.lu.blocks == 0 {
		last = 0
	}
	if last > 0xffffffff {
		last = 0xffffffff
	}
	put32(b, uint32(last))
	put32(b[4:], t.lu.cfg.BlockSize)
	t.data = b
	return nil
}

// cmdReadCapacity16 is READ CAPACITY (16) (SBC-3 5.16): no protection,
// LBPME/LBPRZ when thin, and the physical block size of the LU as LOGICAL
// BLOCKS PER PHYSICAL BLOCK EXPONENT.
func cmdReadCapacity16(t *task) error {
	lu := t.lu
	b := make([]byte, 32)
	last := lu.blocks - 1
	if lu.blocks == 0 {
		last = 0
	}
	put64(b, last)
	put32(b[8:], lu.cfg.BlockSize)
	b[13] = lu.physicalExponent()
	if lu.thin() {
		b[14] = 0x80 | 0x40 // LBPME, LBPRZ
	}
	t.dataIn(b, int(be32(t.cdb[10:])))
	return nil
}

// physicalExponent is log2(physical block size / logical block size).
func (lu *LU) physicalExponent() byte {
	var e byte
	for p := lu.cfg.PhysicalBlockSize; p > lu.cfg.BlockSize; p >>= 1 {
		e++
	}
	return e
}
