package scsi

import "sort"

func opcodesReportCommands() []opInfo {
	return []opInfo{
		{name: "REPORT SUPPORTED OPERATION CODES", opcode: opMaintenanceIn, sa: saReportOpcodes, hasSA: true,
			cdbLen: 12, fn: cmdReportOpcodes, flags: flagsAlwaysAllowed,
			usage: []byte{opMaintenanceIn, saReportOpcodes, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}},
		{name: "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", opcode: opMaintenanceIn, sa: saReportTMFs, hasSA: true,
			cdbLen: 12, fn: cmdReportTMFs, flags: flagsAlwaysAllowed,
			usage: []byte{opMaintenanceIn, saReportTMFs, 0x80, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}},
	}
}

// Command timeouts reported with RCTD (seconds).
const (
	nominalTimeout     = 1
	recommendedTimeout = 30
)

// timeoutsDescriptor is the 12-byte command timeouts descriptor (SPC-4
// 6.35.4).
func timeoutsDescriptor() []byte {
	b := make([]byte, 12)
	put16(b, 0x0a)
	put32(b[4:], nominalTimeout)
	put32(b[8:], recommendedTimeout)
	return b
}

// cmdReportOpcodes is REPORT SUPPORTED OPERATION CODES (SPC-4 6.35).
func cmdReportOpcodes(t *task) error {
	cdb := t.cdb
	rctd := cdb[2]&0x80 != 0
	opcode, sa := cdb[3], be16(cdb[4:])
	alloc := int(be32(cdb[6:]))
	tbl := t.dev.table
	var b []byte
	switch cdb[2] & 0x07 {
	case 0:
		ops := append([]*opInfo(nil), tbl.all...)
		sort.Slice(ops, func(i, j int) bool {
			if ops[i].opcode != ops[j].opcode {
				return ops[i].opcode < ops[j].opcode
			}
			return ops[i].sa < ops[j].sa
		})
		b = make([]byte, 4)
		for _, op := range ops {
			d := make([]byte, 8)
			d[0] = op.opcode
			if op.hasSA {
				put16(d[2:], op.sa)
				d[5] |= 0x01 // SERVACTV
			}
			if rctd {
				d[5] |= 0x02 // CTDP
			}
			put16(d[6:], uint16(op.cdbLen))
			b = append(b, d...)
			if rctd {
				b = append(b, timeoutsDescriptor()...)
			}
		}
		put32(b, uint32(len(b)-4))
	case 1, 2, 3:
		var op *opInfo
		switch cdb[2] & 0x07 {
		case 1:
			if tbl.withSA[opcode] {
				return InvalidCDBField(2, 2)
			}
			op = tbl.byKey[opKey{opcode: opcode}]
		case 2:
			if !tbl.withSA[opcode] && tbl.byKey[opKey{opcode: opcode}] != nil {
				return InvalidCDBField(2, 2)
			}
			op = tbl.byKey[opKey{opcode: opcode, sa: sa}]
		case 3:
			if tbl.withSA[opcode] {
				op = tbl.byKey[opKey{opcode: opcode, sa: sa}]
			} else {
				op = tbl.byKey[opKey{opcode: opcode}]
			}
		}
		b = make([]byte, 4)
		if op == nil {
			b[1] = 0x01 // SUPPORT 001b: not supported
			break
		}
		b[1] = 0x03 // SUPPORT 011b: supported as the standard says
		if rctd {
			b[1] |= 0x80 // CTDP
		}
		usage := op.usage
		if len(usage) != op.cdbLen {
			usage = make([]byte, op.cdbLen)
			usage[0] = op.opcode
		}
		put16(b[2:], uint16(len(usage)))
		b = append(b, usage...)
		if rctd {
			b = append(b, timeoutsDescriptor()...)
		}
	default:
		return InvalidCDBField(2, 2)
	}
	t.dataIn(b, alloc)
	return nil
}

// cmdReportTMFs is REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4
// 6.37): ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET,
// TARGET RESET (the Device methods), and I_T NEXUS RESET (NexusLost).
func cmdReportTMFs(t *task) error {
	alloc := int(be32(t.cdb[6:]))
	if alloc < 4 {
		return InvalidCDBField(6, -1)
	}
	b := make([]byte, 4)
	if t.cdb[2]&0x80 != 0 { // REPD: extended format
		b = make([]byte, 16)
		b[3] = 0x0c
	}
	b[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02 // ATS, ATSS, CTSS, LURS, TRS
	b[1] = 0x01                             // ITNRS
	t.dataIn(b, alloc)
	return nil
}
