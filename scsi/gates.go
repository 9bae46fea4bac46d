package scsi

// decode looks t's CDB up in the opcode table and checks what every
// command shares (SAM-5 5.2, SPC-4 4.2.5): a known operation code and
// service action, a CDB as long as the command's, and a CONTROL byte
// without NACA (ACA is not supported). On success t.op is set and t.cdb
// is trimmed to the command's CDB length.
func (d *Device) decode(t *task) (*opInfo, error) {
	cdb := t.cdb
	if len(cdb) == 0 {
		return nil, NewSense(KeyIllegalRequest, ASCInvalidOpcode)
	}
	op := d.table.lookup(cdb)
	if op == nil {
		if d.table.withSA[cdb[0]] {
			if cdb[0] == 0x7f {
				return nil, InvalidCDBField(8, -1)
			}
			return nil, InvalidCDBField(1, 4)
		}
		return nil, NewSense(KeyIllegalRequest, ASCInvalidOpcode)
	}
	n := op.cdbLen
	if cdb[0] == 0x7f && len(cdb) >= 8 {
		n = 8 + int(cdb[7])
	}
	if n <= 0 || len(cdb) < n {
		return nil, NewSense(KeyIllegalRequest, ASCInvalidOpcode)
	}
	t.cdb = cdb[:n]
	t.op = op
	ctl := n - 1
	if cdb[0] == 0x7f {
		ctl = 1
	}
	if t.cdb[ctl]&0x04 != 0 {
		return nil, InvalidCDBField(ctl, 2)
	}
	if t.cmd.Attr == TaskACA {
		// NACA is never accepted, so no ACA condition can exist (SAM-5).
		return nil, NewSense(KeyIllegalRequest, ASCInvalidMessageError)
	}
	return op, nil
}

// gates is the one gate chain every command on an LU passes before its
// handler runs, in SAM-5/SPC-4 order: a pending unit attention (except for
// the commands that do not report one), a sanitize in progress, the ALUA
// access state of the
// nexus's port group, the reservation, then write protection.
func (lu *LU) gates(t *task) error {
	op := t.op
	if op.flags&opNoUA == 0 {
		if asc, ok := lu.takeUA(t.nexusKey()); ok {
			return NewSense(KeyUnitAttention, asc)
		}
	}
	if err := lu.sanitizeGate(t); err != nil {
		return err
	}
	if err := lu.aluaGate(t); err != nil {
		return err
	}
	if err := lu.reservationGate(t); err != nil {
		return err
	}
	if op.flags&opWrite != 0 && lu.writeProtected() {
		// An invalid protection field is reported before write
		// protection: the CDB itself is wrong (libiscsi's
		// Write*.WriteProtect).
		if protectFieldOpcodes[op.opcode] && t.cdb[1]>>5 != 0 {
			return InvalidCDBField(1, 7)
		}
		return NewSense(KeyDataProtect, ASCWriteProtected)
	}
	return nil
}

// protectFieldOpcodes are the commands whose CDB byte 1 bits 7-5 are a
// RDPROTECT/WRPROTECT/VRPROTECT field. LUs carry no protection
// information, so a non-zero value is INVALID FIELD IN CDB.
var protectFieldOpcodes = map[byte]bool{
	0x28: true, 0x2a: true, 0x2e: true, 0x2f: true, // READ/WRITE/WRITE AND VERIFY/VERIFY (10)
	0xa8: true, 0xaa: true, 0xae: true, 0xaf: true, // (12)
	0x88: true, 0x8a: true, 0x8e: true, 0x8f: true, // (16)
	0x41: true, 0x93: true, // WRITE SAME (10), (16)
	0x89: true, 0x8b: true, 0x9c: true, // COMPARE AND WRITE, ORWRITE (16), WRITE ATOMIC (16)
}

// writeProtected reports whether medium-modifying commands are refused:
// the LU is read-only, or software write protect (SWP in the control mode
// page) is on.
func (lu *LU) writeProtected() bool {
	return lu.cfg.ReadOnly || lu.mode.softwareWriteProtect()
}
