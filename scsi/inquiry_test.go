package scsi

import (
	"bytes"
	"strings"
	"testing"
)

func inquiry(d *Device, n *Nexus, evpd bool, page byte, alloc uint16) *Response {
	c := []byte{opInquiry, 0, page, 0, 0, 0}
	if evpd {
		c[1] = 1
	}
	put16(c[3:], alloc)
	return run(d, n, c, nil, uint32(alloc))
}

func TestStandardInquiry(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	r := inquiry(d, n, false, 0, 260)
	wantGood(t, r)
	b := r.Data
	if b[0] != 0 || b[2] != 6 || b[3]&0x0f != 2 || b[3]&0x10 == 0 || b[7]&0x02 == 0 {
		t.Fatalf("standard inquiry header %x", b[:8])
	}
	if int(b[4]) != len(b)-5 {
		t.Fatalf("additional length %d, data %d", b[4], len(b))
	}
	if b[5]&0x30 != 0x10 || b[5]&0x08 == 0 || b[5]&0x01 != 0 {
		t.Fatalf("byte 5 = %#x: want TPGS 01b, 3PC, no PROTECT", b[5])
	}
	if !strings.HasPrefix(string(b[8:16]), "HATGT") {
		t.Fatalf("vendor %q", b[8:16])
	}
	var vds []uint16
	for i := 58; i < 74; i += 2 {
		vds = append(vds, be16(b[i:]))
	}
	for _, v := range []uint16{versionSAM5, versionISCSI, versionSPC4, versionSBC3} {
		found := false
		for _, x := range vds {
			found = found || x == v
		}
		if !found {
			t.Errorf("version descriptor %04x missing", v)
		}
	}
	for alloc := uint16(0); alloc < 100; alloc += 7 {
		r := inquiry(d, n, false, 0, alloc)
		wantGood(t, r)
		if len(r.Data) != min(int(alloc), 96) {
			t.Fatalf("alloc %d gave %d bytes", alloc, len(r.Data))
		}
	}
	wantSense(t, inquiry(d, n, false, 0x80, 255), KeyIllegalRequest, ASCInvalidFieldInCDB)
	wantSense(t, run(d, n, []byte{opInquiry, 2, 0, 0, 255, 0}, nil, 255), KeyIllegalRequest, ASCInvalidFieldInCDB)
	wantSense(t, inquiry(d, n, true, 0x42, 255), KeyIllegalRequest, ASCInvalidFieldInCDB)
}

func TestVPDPages(t *testing.T) {
	var id [16]byte
	copy(id[:], []byte{0x60, 0x01, 0x40, 0x50, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	d, _, _ := testDevice(t, 64, LUConfig{SerialNumber: "SER123", DeviceID: id, Thin: true})
	n := testNexus(0)
	r := inquiry(d, n, true, 0, 255)
	wantGood(t, r)
	pages := r.Data[4:]
	if int(be16(r.Data[2:])) != len(pages) || len(pages) < 7 {
		t.Fatalf("supported pages %x", r.Data)
	}
	for i := 1; i < len(pages); i++ {
		if pages[i] <= pages[i-1] {
			t.Fatalf("pages not ascending: %x", pages)
		}
	}
	for _, p := range pages {
		r := inquiry(d, n, true, p, 255)
		wantGood(t, r)
		if r.Data[1] != p || int(be16(r.Data[2:]))+4 != len(r.Data) {
			t.Fatalf("page %02x header %x len %d", p, r.Data[:4], len(r.Data))
		}
	}

	r = inquiry(d, n, true, 0x80, 255)
	if string(r.Data[4:]) != "SER123" {
		t.Fatalf("serial %q", r.Data[4:])
	}

	r = inquiry(d, n, true, 0x83, 255)
	type desc struct {
		codeSet, assoc, typ byte
		v                   []byte
	}
	var ds []desc
	for b := r.Data[4:]; len(b) >= 4; {
		l := int(b[3])
		ds = append(ds, desc{b[0] & 0x0f, (b[1] >> 4) & 3, b[1] & 0x0f, b[4 : 4+l]})
		b = b[4+l:]
	}
	want := map[[2]byte]bool{{0, 3}: false, {0, 1}: false, {1, 4}: false, {1, 5}: false, {1, 8}: false, {2, 8}: false}
	for _, x := range ds {
		want[[2]byte{x.assoc, x.typ}] = true
		switch {
		case x.assoc == 0 && x.typ == 3 && !bytes.Equal(x.v, id[:]):
			t.Errorf("NAA designator %x", x.v)
		case x.assoc == 0 && x.typ == 1 && string(x.v) != "HATGT   SER123":
			t.Errorf("T10 vendor designator %q", x.v)
		case x.assoc == 1 && x.typ == 4 && be16(x.v[2:]) != n.RelativeTargetPort:
			t.Errorf("relative target port %x", x.v)
		case x.assoc == 1 && x.typ == 8 && !strings.HasPrefix(string(x.v), n.TargetPort):
			t.Errorf("target port name %q", x.v)
		case x.typ == 8 && len(x.v)%4 != 0:
			t.Errorf("SCSI name string not padded: %d", len(x.v))
		}
	}
	for k, ok := range want {
		if !ok {
			t.Errorf("designator assoc %d type %d missing", k[0], k[1])
		}
	}

	r = inquiry(d, n, true, 0xb0, 255)
	bl := r.Data
	// WSNZ clear: WRITE SAME of 0 blocks means "to the end of the LU".
	if be16(bl[2:]) != 0x3c || bl[4]&1 != 0 || be32(bl[8:]) != maxTransferBytes/512 {
		t.Fatalf("block limits %x", bl[:16])
	}
	if mu := be32(bl[20:]); mu == 0 || mu > 1<<20 || be32(bl[24:]) == 0 {
		t.Fatalf("thin LU unmap limits %d/%d", mu, be32(bl[24:]))
	}
	r = inquiry(d, n, true, 0xb2, 255)
	if r.Data[5]&0xe0 != 0xe0 || r.Data[6]&0x07 != 2 {
		t.Fatalf("LBP page %x", r.Data)
	}

	// Not thin: no UNMAP limits, provisioning type 0.
	d2, _, _ := testDevice(t, 64, LUConfig{})
	if r := inquiry(d2, n, true, 0xb0, 255); be32(r.Data[20:]) != 0 || be32(r.Data[24:]) != 0 {
		t.Fatal("UNMAP limits reported without thin provisioning")
	}
	if r := inquiry(d2, n, true, 0xb2, 255); r.Data[5] != 0 || r.Data[6] != 0 {
		t.Fatalf("LBP page without thin %x", r.Data)
	}
}

func TestReportSupportedOpcodes(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	rsoc := func(opts byte, op byte, sa uint16) *Response {
		c := make([]byte, 12)
		c[0], c[1], c[2], c[3] = opMaintenanceIn, saReportOpcodes, opts, op
		put16(c[4:], sa)
		put32(c[6:], 65535)
		return run(d, n, c, nil, 65535)
	}
	r := rsoc(0, 0, 0)
	wantGood(t, r)
	all := r.Data[4:]
	if int(be32(r.Data)) != len(all) || len(all)%8 != 0 {
		t.Fatalf("list length %d, data %d", be32(r.Data), len(all))
	}
	seen := 0
	for i := 0; i < len(all); i += 8 {
		dsc := all[i : i+8]
		servactv := dsc[5]&1 != 0
		if !servactv && be16(dsc[2:]) != 0 {
			t.Fatalf("SA set without SERVACTV: %x", dsc)
		}
		opts := byte(1)
		if servactv {
			opts = 2
		}
		one := rsoc(opts, dsc[0], be16(dsc[2:]))
		wantGood(t, one)
		if one.Data[1]&7 != 3 || int(be16(one.Data[2:])) != int(be16(dsc[6:])) || one.Data[4] != dsc[0] {
			t.Fatalf("one command %x for %x", one.Data, dsc)
		}
		if servactv && one.Data[5]&0x1f != byte(be16(dsc[2:])) {
			t.Fatalf("usage data lacks the service action: %x", one.Data)
		}
		wrong := byte(3 - opts) // option 2 for a plain opcode and 1 for one with SAs are invalid
		wantSense(t, rsoc(wrong, dsc[0], be16(dsc[2:])), KeyIllegalRequest, ASCInvalidFieldInCDB)
		seen++
	}
	if seen < 25 {
		t.Fatalf("only %d commands reported", seen)
	}
	// READ(10) usage reports DPO and FUA.
	if r := rsoc(1, opRead10, 0); r.Data[5]&0x18 != 0x18 {
		t.Fatalf("READ(10) usage %x", r.Data)
	}
	// RCTD adds a timeouts descriptor to every entry.
	r = rsoc(0x80, 0, 0)
	wantGood(t, r)
	if int(be32(r.Data)) != seen*20 {
		t.Fatalf("RCTD list length %d, want %d", be32(r.Data), seen*20)
	}
	for i := 4; i < len(r.Data); i += 20 {
		if r.Data[i+5]&0x02 == 0 || be16(r.Data[i+8:]) != 0x0a {
			t.Fatalf("RCTD descriptor %x", r.Data[i:i+20])
		}
	}
	// Unsupported command: SUPPORT 001b.
	if r := rsoc(1, 0xff, 0); r.Status != StatusGood || r.Data[1]&7 != 1 {
		t.Fatalf("unsupported opcode: %v %x", r.Status, r.Data)
	}
	wantSense(t, rsoc(4, 0, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)

	// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS.
	c := make([]byte, 12)
	c[0], c[1] = opMaintenanceIn, saReportTMFs
	put32(c[6:], 4)
	r = run(d, n, c, nil, 4)
	wantGood(t, r)
	if r.Data[0] != 0xda || r.Data[1] != 0x01 {
		t.Fatalf("RSTMF %x", r.Data)
	}
	put32(c[6:], 3)
	wantSense(t, run(d, n, c, nil, 3), KeyIllegalRequest, ASCInvalidFieldInCDB)
}
