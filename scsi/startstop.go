package scsi

func startStopCommands() []opInfo {
	return []opInfo{
		{name: "START STOP UNIT", opcode: opStartStopUnit, cdbLen: 6, fn: cmdStartStopUnit,
			usage: []byte{opStartStopUnit, 0x01, 0x00, 0x0f, 0xf7, 0x00}},
		{name: "PREVENT ALLOW MEDIUM REMOVAL", opcode: opPreventAllow, cdbLen: 6, fn: cmdPreventAllow,
			usage: []byte{opPreventAllow, 0x00, 0x00, 0x00, 0x03, 0x00}},
	}
}

// cmdStartStopUnit is START STOP UNIT (SBC-3 5.25). The medium is not
// removable (RMB=0) and never spins down: START, LOEJ and power
// conditions are accepted; a stop (START=0, NO_FLUSH=0) flushes the cache
// as a drive would before spinning down.
func cmdStartStopUnit(t *task) error {
	b4 := t.cdb[4]
	pc := b4 >> 4
	if pc == 0 && b4&0x01 == 0 && b4&0x04 == 0 {
		return t.lu.flush()
	}
	return nil
}

// cmdPreventAllow is PREVENT ALLOW MEDIUM REMOVAL: with a non-removable
// medium there is nothing to lock; it is accepted.
func cmdPreventAllow(t *task) error { return nil }
