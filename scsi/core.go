package scsi

// Operation codes of the commands this file's areas implement (SPC-4,
// SBC-3). Other areas declare theirs in their own files.
const (
	opTestUnitReady   = 0x00
	opRequestSense    = 0x03
	opRead6           = 0x08
	opWrite6          = 0x0a
	opInquiry         = 0x12
	opModeSelect6     = 0x15
	opModeSense6      = 0x1a
	opStartStopUnit   = 0x1b
	opPreventAllow    = 0x1e
	opReadCapacity10  = 0x25
	opRead10          = 0x28
	opWrite10         = 0x2a
	opWriteVerify10   = 0x2e
	opVerify10        = 0x2f
	opSyncCache10     = 0x35
	opModeSelect10    = 0x55
	opModeSense10     = 0x5a
	opRead16          = 0x88
	opWrite16         = 0x8a
	opWriteVerify16   = 0x8e
	opVerify16        = 0x8f
	opSyncCache16     = 0x91
	opServiceActionIn = 0x9e // SERVICE ACTION IN (16)
	opReportLUNs      = 0xa0
	opMaintenanceIn   = 0xa3
	opRead12          = 0xa8
	opWrite12         = 0xaa
	opWriteVerify12   = 0xae
	opVerify12        = 0xaf

	saReadCapacity16   = 0x10 // SERVICE ACTION IN (16)
	saReportOpcodes    = 0x0c // MAINTENANCE IN
	saReportTMFs       = 0x0d // MAINTENANCE IN
	flagsAlwaysAllowed = opAllowedUnderPR | opAllowedStandby | opAllowedRR | opNoMedium
)

// coreCommands is the core area's part of the opcode table: the commands
// every SCSI block device has, from the files of this area (inquiry.go,
// reqsense.go, reportluns.go, capacity.go, rw.go, cache.go, mode.go,
// startstop.go, opcodes_report.go).
func coreCommands() []opInfo {
	var all []opInfo
	for _, l := range [][]opInfo{
		inquiryCommands(), requestSenseCommands(), reportLUNsCommands(),
		capacityCommands(), rwCommands(), cacheCommands(), modeCommands(),
		startStopCommands(), opcodesReportCommands(),
	} {
		all = append(all, l...)
	}
	return all
}

// Big-endian field helpers for CDBs and parameter data.
func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }
func be24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }
func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
func be64(b []byte) uint64 { return uint64(be32(b))<<32 | uint64(be32(b[4:])) }

func put16(b []byte, v uint16) { b[0], b[1] = byte(v>>8), byte(v) }
func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}
func put64(b []byte, v uint64) { put32(b, uint32(v>>32)); put32(b[4:], uint32(v)) }
