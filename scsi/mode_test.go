package scsi

import (
	"bytes"
	"testing"
)

// modePages splits MODE SENSE parameter data (after header and block
// descriptors) into pages keyed by page<<8|subpage.
func modePages(t *testing.T, b []byte) map[uint16][]byte {
	t.Helper()
	out := map[uint16][]byte{}
	for len(b) > 0 {
		if len(b) < 2 {
			t.Fatalf("trailing byte %x", b)
		}
		n := int(b[1]) + 2
		key := uint16(b[0]&0x3f) << 8
		if b[0]&0x40 != 0 {
			n = int(be16(b[2:])) + 4
			key |= uint16(b[1])
		}
		if n > len(b) {
			t.Fatalf("page %x overruns data", b[0])
		}
		out[key] = b[:n]
		b = b[n:]
	}
	return out
}

func modeSense6(d *Device, n *Nexus, dbd bool, pc, page, sub byte, alloc byte) *Response {
	c := []byte{opModeSense6, 0, pc<<6 | page, sub, alloc, 0}
	if dbd {
		c[1] = 0x08
	}
	return run(d, n, c, nil, uint32(alloc))
}

func TestModeSense(t *testing.T) {
	d, lu, _ := testDevice(t, 100, LUConfig{WriteCache: true})
	n := testNexus(0)
	clearUA(d, n)

	r := modeSense6(d, n, false, 0, 0x3f, 0, 255)
	wantGood(t, r)
	if int(r.Data[0]) != len(r.Data)-1 || r.Data[3] != 8 {
		t.Fatalf("header %x (len %d)", r.Data[:4], len(r.Data))
	}
	if be32(r.Data[4:]) != 100 || be24(r.Data[9:]) != 512 {
		t.Fatalf("block descriptor %x", r.Data[4:12])
	}
	if r.Data[2]&0x10 == 0 {
		t.Fatal("DPOFUA not set")
	}
	pages := modePages(t, r.Data[12:])
	for _, k := range []uint16{0x0100, 0x0200, 0x0800, 0x0a00, 0x1a00, 0x1c00} {
		if pages[k] == nil {
			t.Errorf("page %04x missing from 3Fh", k)
		}
	}
	if pages[0x0a01] != nil {
		t.Error("subpage returned for 3Fh/00h")
	}
	if pages[0x0800][2]&0x04 == 0 {
		t.Error("WCE not set with a write cache")
	}

	// All pages and subpages.
	r = modeSense6(d, n, true, 0, 0x3f, 0xff, 255)
	wantGood(t, r)
	if r.Data[3] != 0 || modePages(t, r.Data[4:])[0x0a01] == nil {
		t.Fatal("3Fh/FFh with DBD: want no block descriptor and the control extension subpage")
	}

	// Changeable values: WCE, D_SENSE and SWP.
	r = modeSense6(d, n, true, 1, 0x0a, 0, 255)
	wantGood(t, r)
	ctl := r.Data[4:]
	if ctl[0] != 0x0a || ctl[2] != 0x04 || ctl[4] != 0x08 || ctl[3] != 0 {
		t.Fatalf("changeable control page %x", ctl)
	}

	// Saved values are not supported; unknown page is an invalid field.
	wantSense(t, modeSense6(d, n, false, 3, 0x08, 0, 255), KeyIllegalRequest, ASCSavingParamsNotSupported)
	wantSense(t, modeSense6(d, n, false, 0, 0x05, 0, 255), KeyIllegalRequest, ASCInvalidFieldInCDB)
	wantSense(t, modeSense6(d, n, false, 0, 0x08, 0x07, 255), KeyIllegalRequest, ASCInvalidFieldInCDB)

	// Allocation length truncates.
	if r := modeSense6(d, n, false, 0, 0x3f, 0, 4); len(r.Data) != 4 {
		t.Fatalf("alloc 4 gave %d bytes", len(r.Data))
	}

	// MODE SENSE (10) with LLBAA: long block descriptor.
	c := []byte{opModeSense10, 0x10, 0x08, 0, 0, 0, 0, 0x10, 0x00, 0}
	r = run(d, n, c, nil, 4096)
	wantGood(t, r)
	if int(be16(r.Data)) != len(r.Data)-2 || r.Data[4]&1 == 0 || be16(r.Data[6:]) != 16 {
		t.Fatalf("MODE SENSE(10) header %x", r.Data[:8])
	}
	if be64(r.Data[8:]) != lu.blocks || be32(r.Data[20:]) != 512 {
		t.Fatalf("long block descriptor %x", r.Data[8:24])
	}
}

func modeSelect6(d *Device, n *Nexus, b1 byte, param []byte) *Response {
	return run(d, n, []byte{opModeSelect6, b1, 0, 0, byte(len(param)), 0}, param, 0)
}

func TestModeSelectRoundTrip(t *testing.T) {
	d, lu, mb := testDevice(t, 100, LUConfig{WriteCache: true})
	n, other := testNexus(0), testNexus(1)
	clearUA(d, n)
	clearUA(d, other)

	// Read the current caching page, clear WCE, select it back.
	r := modeSense6(d, n, true, 0, 0x08, 0, 255)
	wantGood(t, r)
	page := bytes.Clone(r.Data[4:])
	page[0] |= 0x80 // PS as returned by a device that saves; must be ignored
	page[2] &^= 0x04
	param := append([]byte{0, 0, 0, 0}, page...)
	wantGood(t, modeSelect6(d, n, 0x10, param))
	if lu.mode.writeCache() {
		t.Fatal("WCE still set after MODE SELECT")
	}
	f := mb.flushes
	wantGood(t, run(d, n, cdb10(opWrite10, 0, 0, 1), make([]byte, 512), 0))
	if mb.flushes != f+1 {
		t.Fatal("write with WCE=0 was not made durable")
	}
	r = modeSense6(d, n, true, 0, 0x08, 0, 255)
	if r.Data[4+2]&0x04 != 0 {
		t.Fatal("MODE SENSE still reports WCE")
	}
	// The other nexus learns of the change, the selecting one does not.
	wantSense(t, run(d, other, make([]byte, 6), nil, 0), KeyUnitAttention, ASCModeParametersChanged)
	wantGood(t, run(d, n, make([]byte, 6), nil, 0))

	// D_SENSE=1 switches sense data to descriptor format.
	r = modeSense6(d, n, true, 0, 0x0a, 0, 255)
	ctl := bytes.Clone(r.Data[4:])
	ctl[2] |= 0x04
	wantGood(t, modeSelect6(d, n, 0x10, append([]byte{0, 0, 0, 0}, ctl...)))
	r = run(d, n, cdb16(opRead16, 0, ^uint64(0), 1), nil, 512)
	if r.Status != StatusCheckCondition || r.Sense[0] != 0x72 || r.Sense[1] != byte(KeyIllegalRequest) || r.Sense[2] != 0x21 {
		t.Fatalf("want descriptor sense LBA OUT OF RANGE, got %x", r.Sense)
	}

	// SWP=1 write-protects.
	ctl[4] |= 0x08
	wantGood(t, modeSelect6(d, n, 0x10, append([]byte{0, 0, 0, 0}, ctl...)))
	r = run(d, n, cdb10(opWrite10, 0, 0, 1), make([]byte, 512), 0)
	if r.Status != StatusCheckCondition || r.Sense[1] != byte(KeyDataProtect) || r.Sense[2] != 0x27 {
		t.Fatalf("want DATA PROTECT with SWP, got %x", r.Sense)
	}
}

func TestModeSelectErrors(t *testing.T) {
	d, _, _ := testDevice(t, 100, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	r := modeSense6(d, n, true, 0, 0x0a, 0, 255)
	ctl := bytes.Clone(r.Data[4:])
	hdr := []byte{0, 0, 0, 0}

	bad := bytes.Clone(ctl)
	bad[3] ^= 0x02 // QErr is not changeable
	short := bytes.Clone(ctl)
	short[1]--
	bdBad := append([]byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x10, 0}, ctl...) // block length 4096
	bdOK := append([]byte{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x02, 0}, ctl...)
	cases := []struct {
		name  string
		b1    byte
		param []byte
		key   SenseKey
		asc   ASC
	}{
		{"PF=0", 0x00, append(hdr, ctl...), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"SP=1", 0x11, append(hdr, ctl...), KeyIllegalRequest, ASCSavingParamsNotSupported},
		{"non-changeable bit", 0x10, append(hdr, bad...), KeyIllegalRequest, ASCInvalidFieldInParam},
		{"page length", 0x10, append(hdr, short[:len(short)-1]...), KeyIllegalRequest, ASCInvalidFieldInParam},
		{"unknown page", 0x10, append(hdr, 0x05, 2, 0, 0), KeyIllegalRequest, ASCInvalidFieldInParam},
		{"header only too short", 0x10, []byte{0, 0}, KeyIllegalRequest, ASCParameterListLength},
		{"truncated page", 0x10, append(hdr, ctl[:6]...), KeyIllegalRequest, ASCParameterListLength},
		{"block length", 0x10, bdBad, KeyIllegalRequest, ASCInvalidFieldInParam},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantSense(t, modeSelect6(d, n, tc.b1, tc.param), tc.key, tc.asc)
		})
	}
	wantGood(t, modeSelect6(d, n, 0x10, bdOK))
	wantGood(t, run(d, n, []byte{opModeSelect6, 0x10, 0, 0, 0, 0}, nil, 0))
	// MODE SELECT (10) round trip.
	p10 := append([]byte{0, 0, 0, 0, 0, 0, 0, 0}, ctl...)
	c := []byte{opModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, byte(len(p10)), 0}
	wantGood(t, run(d, n, c, p10, 0))
}
