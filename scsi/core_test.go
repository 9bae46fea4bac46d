package scsi

import (
	"bytes"
	"context"
	"testing"
)

func cdb10(op byte, b1 byte, lba uint32, n uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = op, b1
	put32(c[2:], lba)
	put16(c[7:], n)
	return c
}

func cdb16(op byte, b1 byte, lba uint64, n uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = op, b1
	put64(c[2:], lba)
	put32(c[10:], n)
	return c
}

func wantSense(t *testing.T, r *Response, key SenseKey, asc ASC) {
	t.Helper()
	k, a := senseOf(t, r)
	if k != key || a != asc {
		t.Fatalf("got sense %x/%04x, want %x/%04x", k, a, key, asc)
	}
}

func wantGood(t *testing.T, r *Response) {
	t.Helper()
	if r.Status != StatusGood {
		t.Fatalf("got %v sense %x, want GOOD", r.Status, r.Sense)
	}
}

func TestFirstCommandSeesPowerOnUA(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	// INQUIRY does not report or clear it.
	wantGood(t, run(d, n, []byte{opInquiry, 0, 0, 0, 96, 0}, nil, 96))
	wantSense(t, run(d, n, make([]byte, 6), nil, 0), KeyUnitAttention, ASCPowerOnReset)
	wantGood(t, run(d, n, make([]byte, 6), nil, 0))
	// A second nexus gets its own.
	wantSense(t, run(d, testNexus(1), make([]byte, 6), nil, 0), KeyUnitAttention, ASCPowerOnReset)
}

func TestRequestSenseReportsAndClearsUA(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	r := run(d, n, []byte{opRequestSense, 0, 0, 0, 252, 0}, nil, 252)
	wantGood(t, r)
	if r.Data[0] != 0x70 || r.Data[2] != byte(KeyUnitAttention) || r.Data[12] != 0x29 {
		t.Fatalf("sense data %x", r.Data)
	}
	r = run(d, n, []byte{opRequestSense, 1, 0, 0, 252, 0}, nil, 252)
	wantGood(t, r)
	if r.Data[0] != 0x72 || r.Data[1] != byte(KeyNoSense) {
		t.Fatalf("descriptor sense data %x", r.Data)
	}
	r = run(d, n, []byte{opRequestSense, 0, 0, 0, 8, 0}, nil, 8)
	if len(r.Data) != 8 {
		t.Fatalf("allocation length not honoured: %d bytes", len(r.Data))
	}
}

func TestAbsentLUN(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	ex := func(lun uint64, cdb []byte, alloc uint32) *Response {
		return d.Execute(t.Context(), &Command{Nexus: n, LUN: lun, CDB: cdb, DataInLen: alloc})
	}
	r := ex(5, []byte{opInquiry, 0, 0, 0, 96, 0}, 96)
	wantGood(t, r)
	if r.Data[0] != 0x7f {
		t.Fatalf("peripheral byte %#x, want 0x7f", r.Data[0])
	}
	wantSense(t, ex(5, make([]byte, 6), 0), KeyIllegalRequest, ASCLUNotSupported)
	wantSense(t, ex(5, cdb10(opRead10, 0, 0, 1), 512), KeyIllegalRequest, ASCLUNotSupported)
	r = ex(5, []byte{opRequestSense, 0, 0, 0, 18, 0}, 18)
	wantGood(t, r)
	if r.Data[2] != byte(KeyIllegalRequest) || r.Data[12] != 0x25 {
		t.Fatalf("request sense data %x", r.Data)
	}
	rl := make([]byte, 12)
	rl[0] = opReportLUNs
	put32(rl[6:], 64)
	r = ex(5, rl, 64)
	wantGood(t, r)
	if be32(r.Data) != 8 {
		t.Fatalf("REPORT LUNS list length %d", be32(r.Data))
	}
}

func TestReportLUNs(t *testing.T) {
	d, lu, _ := testDevice(t, 64, LUConfig{})
	for _, l := range []uint64{7, 300} {
		if err := d.AddLU(l, lu); err != nil {
			t.Fatal(err)
		}
	}
	n := testNexus(0)
	clearUA(d, n)
	rl := func(sel byte, alloc uint32) *Response {
		c := make([]byte, 12)
		c[0], c[2] = opReportLUNs, sel
		put32(c[6:], alloc)
		return run(d, n, c, nil, alloc)
	}
	r := rl(0, 256)
	wantGood(t, r)
	want := []byte{0, 0, 0, 24, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0,
		0, 7, 0, 0, 0, 0, 0, 0,
		0x41, 0x2c, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(r.Data, want) {
		t.Fatalf("REPORT LUNS\n got %x\nwant %x", r.Data, want)
	}
	if err := d.AddLU(1<<14, lu); err == nil {
		t.Fatal("AddLU accepted a LUN REPORT LUNS cannot encode")
	}
	r = rl(1, 256)
	wantGood(t, r)
	if be32(r.Data) != 0 {
		t.Fatalf("well-known list not empty: %x", r.Data)
	}
	// REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED, and only that.
	lu.addUA(n.Key(), ASCReportedLUNsDataChanged)
	lu.addUA(n.Key(), ASCModeParametersChanged)
	wantGood(t, rl(0, 256))
	wantSense(t, run(d, n, make([]byte, 6), nil, 0), KeyUnitAttention, ASCModeParametersChanged)
	wantGood(t, run(d, n, make([]byte, 6), nil, 0))
	wantSense(t, rl(0, 15), KeyIllegalRequest, ASCInvalidFieldInCDB)
	wantSense(t, rl(3, 256), KeyIllegalRequest, ASCInvalidFieldInCDB)
	if r := rl(0, 16); len(r.Data) != 16 {
		t.Fatalf("alloc 16 gave %d bytes", len(r.Data))
	}
}

func TestGateChain(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	tests := []struct {
		name string
		cdb  []byte
		key  SenseKey
		asc  ASC
		ptr  int
	}{
		{"invalid opcode", []byte{0xff, 0, 0, 0, 0, 0}, KeyIllegalRequest, ASCInvalidOpcode, -1},
		{"unknown service action", []byte{opServiceActionIn, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, KeyIllegalRequest, ASCInvalidFieldInCDB, 1},
		{"NACA", []byte{0, 0, 0, 0, 0, 0x04}, KeyIllegalRequest, ASCInvalidFieldInCDB, 5},
		{"short CDB", []byte{opRead10, 0, 0}, KeyIllegalRequest, ASCInvalidOpcode, -1},
		{"empty CDB", []byte{}, KeyIllegalRequest, ASCInvalidOpcode, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := run(d, n, tc.cdb, nil, 0)
			wantSense(t, r, tc.key, tc.asc)
			if tc.ptr >= 0 && (r.Sense[15]&0xc0 != 0xc0 || int(be16(r.Sense[16:])) != tc.ptr) {
				t.Fatalf("field pointer %x, want byte %d", r.Sense[15:18], tc.ptr)
			}
		})
	}
}

func TestHandlerPanicFailsOnlyTheCommand(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	d.table.byKey[opKey{opcode: 0xc0}] = &opInfo{name: "PANIC", opcode: 0xc0, cdbLen: 6, fn: func(*task) error { panic("boom") }}
	wantSense(t, run(d, n, []byte{0xc0, 0, 0, 0, 0, 0}, nil, 0), KeyHardwareError, ASCInternalTargetFailure)
	wantGood(t, run(d, n, make([]byte, 6), nil, 0))
}

func TestACATaskWithoutACA(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	r := d.Execute(t.Context(), &Command{Nexus: n, CDB: make([]byte, 6), Attr: TaskACA})
	wantSense(t, r, KeyIllegalRequest, ASCInvalidMessageError)
}

func TestFixedSenseLargeInformation(t *testing.T) {
	e := &SenseError{Key: KeyMiscompare, ASC: ASCMiscompareDuringVerify, Info: 1 << 40, InfoValid: true}
	if f := e.Fixed(); f[0]&0x80 != 0 {
		t.Fatalf("VALID set for an INFORMATION that does not fit: %x", f)
	}
	if d := e.Descriptor(); len(d) != 20 || be64(d[12:]) != 1<<40 {
		t.Fatalf("descriptor INFORMATION %x", d)
	}
}

// TestGateOrder checks that decode errors come before a unit attention,
// and the unit attention before write protection.
func TestGateOrder(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{ReadOnly: true})
	n := testNexus(0)
	wantSense(t, run(d, n, []byte{0xff, 0, 0, 0, 0, 0}, nil, 0), KeyIllegalRequest, ASCInvalidOpcode)
	wantSense(t, run(d, n, []byte{0, 0, 0, 0, 0, 0x04}, nil, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
	wantSense(t, run(d, n, cdb10(opWrite10, 0, 0, 1), make([]byte, 512), 0), KeyUnitAttention, ASCPowerOnReset)
	wantSense(t, run(d, n, cdb10(opWrite10, 0, 0, 1), make([]byte, 512), 0), KeyDataProtect, ASCWriteProtected)
}

func TestUAOrderOldestFirst(t *testing.T) {
	d, lu, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	lu.addUA(n.Key(), ASCModeParametersChanged)
	lu.addUA(n.Key(), ASCCapacityDataChanged)
	wantSense(t, run(d, n, make([]byte, 6), nil, 0), KeyUnitAttention, ASCModeParametersChanged)
	wantSense(t, run(d, n, make([]byte, 6), nil, 0), KeyUnitAttention, ASCCapacityDataChanged)
	wantGood(t, run(d, n, make([]byte, 6), nil, 0))
}

func TestReadCapacity(t *testing.T) {
	d, _, _ := testDevice(t, 1000, LUConfig{BlockSize: 4096})
	n := testNexus(0)
	clearUA(d, n)
	r := run(d, n, cdb10(opReadCapacity10, 0, 0, 0), nil, 8)
	wantGood(t, r)
	if be32(r.Data) != 999 || be32(r.Data[4:]) != 4096 {
		t.Fatalf("RC10 %x", r.Data)
	}
	wantSense(t, run(d, n, cdb10(opReadCapacity10, 0, 5, 0), nil, 8), KeyIllegalRequest, ASCInvalidFieldInCDB)
	for _, alloc := range []uint32{0, 8, 12, 32, 64} {
		c := cdb16(opServiceActionIn, saReadCapacity16, 0, alloc)
		r = run(d, n, c, nil, alloc)
		wantGood(t, r)
		want := min(int(alloc), 32)
		if len(r.Data) != want {
			t.Fatalf("RC16 alloc %d: %d bytes", alloc, len(r.Data))
		}
		if alloc >= 12 && (be64(r.Data) != 999 || be32(r.Data[8:]) != 4096) {
			t.Fatalf("RC16 %x", r.Data)
		}
	}
	// Thin: LBPME and LBPRZ.
	d2, _, _ := testDevice(t, 64, LUConfig{Thin: true})
	clearUA(d2, n)
	r = run(d2, n, cdb16(opServiceActionIn, saReadCapacity16, 0, 32), nil, 32)
	wantGood(t, r)
	if r.Data[14]&0xc0 != 0xc0 {
		t.Fatalf("thin RC16 byte 14 = %#x", r.Data[14])
	}
}

func TestStartStopPreventAllowSyncCache(t *testing.T) {
	d, _, mb := testDevice(t, 64, LUConfig{WriteCache: true})
	n := testNexus(0)
	clearUA(d, n)
	wantGood(t, run(d, n, []byte{opStartStopUnit, 0, 0, 0, 0x01, 0}, nil, 0))
	wantGood(t, run(d, n, []byte{opStartStopUnit, 1, 0, 0, 0x02, 0}, nil, 0))
	before := mb.flushes
	wantGood(t, run(d, n, []byte{opStartStopUnit, 0, 0, 0, 0x00, 0}, nil, 0))
	if mb.flushes == before {
		t.Fatal("STOP did not flush")
	}
	wantGood(t, run(d, n, []byte{opPreventAllow, 0, 0, 0, 1, 0}, nil, 0))
	wantGood(t, run(d, n, []byte{opPreventAllow, 0, 0, 0, 0, 0}, nil, 0))
	before = mb.flushes
	wantGood(t, run(d, n, cdb10(opSyncCache10, 0, 0, 0), nil, 0))
	wantGood(t, run(d, n, cdb16(opSyncCache16, 2, 60, 4), nil, 0))
	if mb.flushes != before+2 {
		t.Fatalf("flushes %d, want %d", mb.flushes, before+2)
	}
	wantSense(t, run(d, n, cdb10(opSyncCache10, 0, 60, 5), nil, 0), KeyIllegalRequest, ASCLBAOutOfRange)
	wantSense(t, run(d, n, cdb16(opSyncCache16, 0, 65, 0), nil, 0), KeyIllegalRequest, ASCLBAOutOfRange)
}

func TestDescriptorSenseFormat(t *testing.T) {
	e := &SenseError{Key: KeyMiscompare, ASC: ASCMiscompareDuringVerify, Info: 0x1234, InfoValid: true}
	b := e.Descriptor()
	want := []byte{0x72, 0x0e, 0x1d, 0x00, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34}
	if !bytes.Equal(b, want) {
		t.Fatalf("descriptor sense\n got %x\nwant %x", b, want)
	}
	b = InvalidCDBField(7, 3).Descriptor()
	want = []byte{0x72, 0x05, 0x24, 0x00, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xcb, 0x00, 0x07, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("descriptor sense\n got %x\nwant %x", b, want)
	}
}

// A LUN added to or removed from a running device raises REPORTED LUNS
// DATA HAS CHANGED on the nexuses of the other LUs (what makes Linux
// rescan); REPORT LUNS clears it, and the LU itself is not told.
func TestLUNInventoryChangeRaisesUnitAttention(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n, quiet := testNexus(0), testNexus(1)
	clearUA(d, n)
	tur := func(n *Nexus) *Response { return run(d, n, make([]byte, 6), nil, 0) }
	lu1, err := NewLU(newMemBackend(64*512), LUConfig{BlockSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.AddLU(1, lu1); err != nil {
		t.Fatal(err)
	}
	wantSense(t, tur(n), KeyUnitAttention, ASCReportedLUNsDataChanged)
	wantGood(t, tur(n))
	// A nexus LUN 0 had not seen gets its power-on UA only, once.
	wantSense(t, tur(quiet), KeyUnitAttention, ASCPowerOnReset)
	wantGood(t, tur(quiet))

	d.RemoveLU(1)
	r := d.Execute(context.Background(), &Command{Nexus: n, CDB: []byte{opReportLUNs, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, DataInLen: 256})
	wantGood(t, r)
	wantGood(t, tur(n)) // REPORT LUNS cleared it
	wantSense(t, tur(quiet), KeyUnitAttention, ASCReportedLUNsDataChanged)
	d.RemoveLU(7) // absent: nobody is told
	wantGood(t, tur(quiet))
}
