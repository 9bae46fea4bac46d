package scsi

import (
	"bytes"
	"context"
	"testing"
)

// FuzzCDB sends arbitrary CDBs (with a little Data-Out) to a small LU: the
// device server must never panic, and every response must be a valid
// status; CHECK CONDITION must carry well-formed sense data.
func FuzzCDB(f *testing.F) {
	seeds := [][]byte{
		{opTestUnitReady, 0, 0, 0, 0, 0},
		{opInquiry, 1, 0x83, 0, 255, 0},
		{opInquiry, 1, 0xb0, 0xff, 0xff, 0},
		{opRequestSense, 1, 0, 0, 255, 0},
		{opModeSense6, 0, 0x3f, 0xff, 255, 0},
		{opModeSense10, 0x18, 0x3f, 0xff, 0, 0, 0, 0xff, 0xff, 0},
		{opModeSelect6, 0x10, 0, 0, 24, 0},
		{opModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, 24, 0},
		cdb10(opRead10, 0, 0, 1),
		cdb10(opWrite10, 0x08, 1, 1),
		cdb10(opVerify10, 0x06, 0, 2),
		cdb16(opRead16, 0, ^uint64(0), 0xffffffff),
		cdb16(opServiceActionIn, saReadCapacity16, 0, 32),
		{opMaintenanceIn, saReportOpcodes, 0x82, opServiceActionIn, 0, 0x10, 0, 0, 1, 0, 0, 0},
		{opMaintenanceIn, saReportTMFs, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0},
		{opReportLUNs, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
		{opRead6, 0, 0, 0, 0, 0},
		{opStartStopUnit, 1, 0, 0, 0, 0},
		{0x7f, 0, 0, 0, 0, 0, 0, 0x18, 0, 0},
	}
	for _, s := range seeds {
		f.Add(s, []byte{0, 0, 0, 0, 0x0a, 0x0a, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	}
	d, _, _ := fuzzDevice(f)
	n := testNexus(0)
	f.Fuzz(func(t *testing.T, cdb, data []byte) {
		if len(cdb) > 32 || len(data) > 8192 {
			return
		}
		cmd := &Command{Nexus: n, CDB: bytes.Clone(cdb), Data: data, DataInLen: 4096, DataOutLen: uint32(len(data))}
		r := d.Execute(context.Background(), cmd)
		switch r.Status {
		case StatusGood, StatusReservationConflict, StatusBusy, StatusTaskSetFull, StatusConditionMet:
		case StatusCheckCondition:
			s := r.Sense
			if len(s) >= 14 && s[2]&0x0f == byte(KeyHardwareError) && s[12] == 0x44 {
				t.Fatalf("CDB %x: INTERNAL TARGET FAILURE (a handler panicked or failed unexpectedly)", cdb)
			}
			switch {
			case len(s) >= 18 && s[0]&0x7f == 0x70 && int(s[7])+8 == len(s):
			case len(s) >= 8 && s[0] == 0x72 && int(s[7])+8 == len(s):
			default:
				t.Fatalf("CDB %x: malformed sense %x", cdb, s)
			}
		default:
			t.Fatalf("CDB %x: unexpected status %v", cdb, r.Status)
		}
	})
}

func fuzzDevice(f *testing.F) (*Device, *LU, *memBackend) {
	mb := newMemBackend(64 * 512)
	lu, err := NewLU(mb, LUConfig{WriteCache: true, Thin: true})
	if err != nil {
		f.Fatal(err)
	}
	d := NewDevice(DeviceConfig{})
	if err := d.AddLU(0, lu); err != nil {
		f.Fatal(err)
	}
	return d, lu, mb
}
