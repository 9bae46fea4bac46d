package scsi

// handlerFunc executes one command on a logical unit. It returns nil for
// GOOD, a *SenseError for CHECK CONDITION or a *StatusError. Data-In goes in
// t.data.
type handlerFunc func(t *task) error

// opFlags describe how the gate chain treats a command.
type opFlags uint32

const (
	// opAllowedUnderPR: allowed from any nexus whatever the persistent
	// reservation (SPC-4 table 69 "Allowed" in every column): INQUIRY,
	// REPORT LUNS, REQUEST SENSE, TEST UNIT READY ...
	opAllowedUnderPR opFlags = 1 << iota
	// opReadLike: allowed for non-registrants under Write Exclusive
	// reservations (reads).
	opReadLike
	// opNoUA: does not report or clear a pending unit attention (INQUIRY,
	// REPORT LUNS, REQUEST SENSE - SAM-5 5.14).
	opNoUA
	// opAllowedStandby: allowed while the port group is in Standby or
	// Unavailable (SPC-4 5.15.2.4.4/5): INQUIRY, REPORT LUNS, REPORT TPG,
	// MODE SENSE, REQUEST SENSE, PR IN/OUT, ...
	opAllowedStandby
	// opWrite: modifies the medium; refused with DATA PROTECT on a
	// read-only LU.
	opWrite
	// opAllowedRR: allowed for non-holders under an SPC-2 RESERVE.
	opAllowedRR
	// opNoMedium: does not need the medium (backend) to be ready.
	opNoMedium
)

// opInfo is one entry of the declarative opcode table.
type opInfo struct {
	name   string
	opcode byte
	// sa is the service action; hasSA says the opcode uses one (in byte 1
	// bits 4-0, or a 16-bit field for 0x7f/0x9e/0xa3/0xa4 as SPC-4 says).
	sa    uint16
	hasSA bool
	// cdbLen is the CDB length; usage is the CDB usage data for REPORT
	// SUPPORTED OPERATION CODES (len == cdbLen, first byte the opcode).
	cdbLen int
	usage  []byte
	flags  opFlags
	fn     handlerFunc
}

// opKey indexes the table.
type opKey struct {
	opcode byte
	sa     uint16
}

// opTable is built once per device from the per-area command lists; it is
// read-only afterwards.
type opTable struct {
	byKey  map[opKey]*opInfo
	withSA map[byte]bool
	all    []*opInfo
}

func newOpTable() *opTable {
	t := &opTable{byKey: map[opKey]*opInfo{}, withSA: map[byte]bool{}}
	for _, list := range [][]opInfo{
		coreCommands(),        // core.go: INQUIRY, TUR, REPORT LUNS, MODE ..., READ/WRITE
		reservationCommands(), // pr.go: PR IN/OUT, RESERVE/RELEASE
		portGroupCommands(),   // alua.go: REPORT TARGET PORT GROUPS
		thinCommands(),        // thin.go: UNMAP, WRITE SAME, GET LBA STATUS
		atomicCommands(),      // atomic.go: COMPARE AND WRITE, ORWRITE, WRITE ATOMIC
		copyCommands(),        // xcopy.go: EXTENDED COPY, RECEIVE COPY RESULTS
		miscCommands(),        // misc.go: SANITIZE, READ DEFECT DATA, PRE-FETCH ...
	} {
		for i := range list {
			op := &list[i]
			k := opKey{opcode: op.opcode}
			if op.hasSA {
				k.sa = op.sa
				t.withSA[op.opcode] = true
			}
			if _, dup := t.byKey[k]; dup {
				panic("scsi: duplicate opcode table entry " + op.name)
			}
			t.byKey[k] = op
			t.all = append(t.all, op)
		}
	}
	return t
}
