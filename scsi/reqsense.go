package scsi

func requestSenseCommands() []opInfo {
	return []opInfo{
		{name: "REQUEST SENSE", opcode: opRequestSense, cdbLen: 6, fn: cmdRequestSense,
			flags: flagsAlwaysAllowed | opNoUA,
			usage: []byte{opRequestSense, 0x01, 0x00, 0x00, 0xff, 0x00}},
		{name: "TEST UNIT READY", opcode: opTestUnitReady, cdbLen: 6, fn: cmdTestUnitReady,
			flags: opAllowedUnderPR | opNoMedium,
			usage: []byte{opTestUnitReady, 0, 0, 0, 0, 0}},
	}
}

// cmdTestUnitReady is TEST UNIT READY: the gate chain has already reported
// any unit attention, access-state or reservation problem.
func cmdTestUnitReady(t *task) error { return nil }

// cmdRequestSense is REQUEST SENSE (SPC-4 6.29). No command leaves sense
// data behind (autosense), so it reports a pending unit attention, which
// it clears, as SPC-4 asks, or else NO SENSE. DESC selects the format.
func cmdRequestSense(t *task) error {
	e := NewSense(KeyNoSense, ASCNoAdditional)
	if asc, ok := t.lu.takeUA(t.nexusKey()); ok {
		e = NewSense(KeyUnitAttention, asc)
	}
	t.dataIn(senseParam(e, t.cdb[1]&1 != 0), int(t.cdb[4]))
	return nil
}

// requestSenseAbsent answers REQUEST SENSE addressed to an absent LUN: the
// parameter data say LOGICAL UNIT NOT SUPPORTED (SPC-4 6.29).
func requestSenseAbsent(t *task) error {
	t.dataIn(senseParam(NewSense(KeyIllegalRequest, ASCLUNotSupported), t.cdb[1]&1 != 0), int(t.cdb[4]))
	return nil
}

func senseParam(e *SenseError, desc bool) []byte {
	if desc {
		return e.Descriptor()
	}
	return e.Fixed()
}
