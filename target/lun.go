package target

// noSuchLUN is a LUN number no device exposes. A LUN field the target
// cannot decode is passed to the SCSI layer as noSuchLUN so that the device
// server answers with its standard "LOGICAL UNIT NOT SUPPORTED" sense.
const noSuchLUN = ^uint64(0)

// decodeLUN converts the 8-byte SAM-5 LUN structure of a PDU into the flat
// LUN number the scsi package uses. It understands single level
// peripheral device addressing (00b, bus 0: 0x00LL) and flat space
// addressing (01b: 0x4HLL). Anything else (multi-level, logical unit
// addressing, extended addressing) yields noSuchLUN.
func decodeLUN(raw uint64) uint64 {
	b0 := byte(raw >> 56)
	b1 := byte(raw >> 48)
	if raw&0x0000ffffffffffff != 0 {
		return noSuchLUN
	}
	switch b0 >> 6 {
	case 0: // peripheral device addressing
		if b0&0x3f != 0 {
			return noSuchLUN // a bus other than 0 means another level
		}
		return uint64(b1)
	case 1: // flat space addressing
		return uint64(b0&0x3f)<<8 | uint64(b1)
	}
	return noSuchLUN
}

// encodeLUN is the inverse of decodeLUN for LUNs below 16384: peripheral
// addressing below 256, flat space addressing above.
func encodeLUN(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	return (0x40|(lun>>8)&0x3f)<<56 | (lun&0xff)<<48
}
