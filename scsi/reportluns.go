package scsi

func reportLUNsCommands() []opInfo {
	return []opInfo{
		{name: "REPORT LUNS", opcode: opReportLUNs, cdbLen: 12, fn: cmdReportLUNs,
			flags: flagsAlwaysAllowed | opNoUA,
			usage: []byte{opReportLUNs, 0x00, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}},
	}
}

// cmdReportLUNs is REPORT LUNS (SPC-4 6.33). It works whatever LUN it is
// addressed to. The device has no well-known or administrative LUs, so
// SELECT REPORT 01h and 10h give an empty list, 00h/02h/11h/12h every LU.
func cmdReportLUNs(t *task) error {
	alloc := be32(t.cdb[6:])
	if alloc < 16 {
		return InvalidCDBField(6, -1)
	}
	var luns []uint64
	switch t.cdb[2] {
	case 0x00, 0x02, 0x11, 0x12:
		luns = t.dev.LUNs()
	case 0x01, 0x10:
	default:
		return InvalidCDBField(2, -1)
	}
	b := make([]byte, 8, 8+8*len(luns))
	for _, l := range luns {
		e, ok := encodeLUN(l)
		if ok {
			b = append(b, e[:]...)
		}
	}
	put32(b, uint32(len(b)-8))
	t.dataIn(b, int(alloc))
	if t.lu != nil {
		t.lu.clearUAOf(t.nexusKey(), ASCReportedLUNsDataChanged)
	}
	return nil
}

// encodeLUN returns the 8-byte SAM-5 LUN structure for lun: peripheral
// device addressing below 256, flat space addressing (01b) below 16384.
func encodeLUN(lun uint64) ([8]byte, bool) {
	var e [8]byte
	switch {
	case lun < 256:
		e[1] = byte(lun)
	case lun < 1<<14:
		e[0], e[1] = 0x40|byte(lun>>8), byte(lun)
	default:
		return e, false
	}
	return e, true
}
