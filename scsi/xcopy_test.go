package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
)

func xcopyCDB(plen int) []byte {
	c := make([]byte, 16)
	c[0] = 0x83
	binary.BigEndian.PutUint32(c[10:], uint32(plen))
	return c
}

func rcrCDB(sa, listID byte, alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1], c[2] = 0x84, sa, listID
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

// identCSCD is an identification CSCD descriptor (E4h) naming the LU with
// NAA designator id.
func identCSCD(id [16]byte) []byte {
	d := make([]byte, 32)
	d[0] = 0xe4
	d[4] = 0x01 // binary code set
	d[5] = 0x03 // association LU, type NAA
	d[7] = 16
	copy(d[8:], id[:])
	d[30] = 0x02 // block length 512
	return d
}

func b2bSegment(src, dst uint16, blocks uint16, srcLBA, dstLBA uint64) []byte {
	d := make([]byte, 28)
	d[0] = 0x02
	binary.BigEndian.PutUint16(d[2:], 24)
	binary.BigEndian.PutUint16(d[4:], src)
	binary.BigEndian.PutUint16(d[6:], dst)
	binary.BigEndian.PutUint16(d[10:], blocks)
	binary.BigEndian.PutUint64(d[12:], srcLBA)
	binary.BigEndian.PutUint64(d[20:], dstLBA)
	return d
}

// xcopyParams assembles a LID1 parameter list.
func xcopyParams(listID, usage byte, cscds [][]byte, segs [][]byte) []byte {
	var c, s []byte
	for _, x := range cscds {
		c = append(c, x...)
	}
	for _, x := range segs {
		s = append(s, x...)
	}
	h := make([]byte, 16)
	h[0] = listID
	h[1] = usage << 3
	binary.BigEndian.PutUint16(h[2:], uint16(len(c)))
	binary.BigEndian.PutUint32(h[8:], uint32(len(s)))
	return append(append(h, c...), s...)
}

var (
	idA = [16]byte{0x60, 0x01, 0x40, 0x50, 1}
	idB = [16]byte{0x60, 0x01, 0x40, 0x50, 2}
)

// twoLUDevice returns a device with LU A (LUN 0) and LU B (LUN 1).
func twoLUDevice(t *testing.T) (*Device, *memBackend, *memBackend, *Nexus) {
	t.Helper()
	d, _, mbA := testDevice(t, 64, LUConfig{DeviceID: idA})
	mbB := newMemBackend(32 * 512)
	luB, err := NewLU(mbB, LUConfig{BlockSize: 512, DeviceID: idB})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.AddLU(1, luB); err != nil {
		t.Fatal(err)
	}
	n := testNexus(0)
	clearUA(d, n)
	return d, mbA, mbB, n
}

func TestExtendedCopyCopies(t *testing.T) {
	d, mbA, mbB, n := twoLUDevice(t)
	src := make([]byte, 8*512)
	for i := range src {
		src[i] = byte(i * 7)
	}
	mbA.WriteAt(src, 0)

	// Within A (0..7 -> 40..47) and from A to B (2..5 -> B 20..23), held
	// under list identifier 9.
	p := xcopyParams(9, 0, [][]byte{identCSCD(idA), identCSCD(idB)}, [][]byte{
		b2bSegment(0, 0, 8, 0, 40),
		b2bSegment(0, 1, 4, 2, 20),
	})
	expectGood(t, run(d, n, xcopyCDB(len(p)), p, 0))
	if !bytes.Equal(mbA.bytesAt(40*512, 8*512), src) {
		t.Fatal("copy within the LU is wrong")
	}
	if !bytes.Equal(mbB.bytesAt(20*512, 4*512), src[2*512:6*512]) {
		t.Fatal("copy to the other LU is wrong")
	}
	if !bytes.Equal(mbB.bytesAt(0, 20*512), make([]byte, 20*512)) || !bytes.Equal(mbB.bytesAt(24*512, 8*512), make([]byte, 8*512)) {
		t.Fatal("copy wrote outside its destination range")
	}

	// COPY STATUS for the held list.
	r := run(d, n, rcrCDB(0x00, 9, 1024), nil, 1024)
	expectGood(t, r)
	if len(r.Data) != 12 || r.Data[4] != 0x01 || binary.BigEndian.Uint16(r.Data[5:]) != 2 ||
		r.Data[7] != 0 || binary.BigEndian.Uint32(r.Data[8:]) != 12*512 {
		t.Fatalf("COPY STATUS %x", r.Data)
	}
	// Another nexus does not see it; an unknown list is an invalid field.
	n2 := testNexus(1)
	clearUA(d, n2)
	expectSense(t, run(d, n2, rcrCDB(0x00, 9, 1024), nil, 1024), KeyIllegalRequest, ASCInvalidFieldInCDB)
	expectSense(t, run(d, n, rcrCDB(0x00, 10, 1024), nil, 1024), KeyIllegalRequest, ASCInvalidFieldInCDB)

	// LIST ID USAGE 10b: not held.
	p = xcopyParams(11, 2, [][]byte{identCSCD(idA)}, [][]byte{b2bSegment(0, 0, 1, 0, 63)})
	expectGood(t, run(d, n, xcopyCDB(len(p)), p, 0))
	expectSense(t, run(d, n, rcrCDB(0x00, 11, 1024), nil, 1024), KeyIllegalRequest, ASCInvalidFieldInCDB)
	if !bytes.Equal(mbA.bytesAt(63*512, 512), src[:512]) {
		t.Fatal("unheld copy did not copy")
	}
}

func TestExtendedCopyOverlapping(t *testing.T) {
	d, mbA, _, n := twoLUDevice(t)
	src := make([]byte, 10*512)
	for i := range src {
		src[i] = byte(i / 512)
	}
	mbA.WriteAt(src, 0)
	// Forward overlap: blocks 0..9 -> 3..12.
	p := xcopyParams(0, 3, [][]byte{identCSCD(idA)}, [][]byte{b2bSegment(0, 0, 10, 0, 3)})
	expectGood(t, run(d, n, xcopyCDB(len(p)), p, 0))
	if !bytes.Equal(mbA.bytesAt(3*512, 10*512), src) {
		t.Fatal("overlapping copy corrupted the data")
	}
}

func TestExtendedCopyFailureIsReported(t *testing.T) {
	d, _, _, n := twoLUDevice(t)
	p := xcopyParams(5, 0, [][]byte{identCSCD(idA)}, [][]byte{
		b2bSegment(0, 0, 1, 0, 1),
		b2bSegment(0, 0, 4, 0, 62), // beyond the end
	})
	expectSense(t, run(d, n, xcopyCDB(len(p)), p, 0), KeyCopyAborted, ASCNoAdditional)
	r := run(d, n, rcrCDB(0x00, 5, 1024), nil, 1024)
	expectGood(t, r)
	if r.Data[4] != 0x02 || binary.BigEndian.Uint16(r.Data[5:]) != 1 {
		t.Fatalf("COPY STATUS after failure %x", r.Data)
	}
	r = run(d, n, rcrCDB(0x04, 5, 1024), nil, 1024)
	expectGood(t, r)
	if len(r.Data) < 60+18 || r.Data[56] != byte(StatusCheckCondition) || r.Data[60+2]&0xf != byte(KeyCopyAborted) {
		t.Fatalf("FAILED SEGMENT DETAILS %x", r.Data)
	}
}

func TestExtendedCopyErrors(t *testing.T) {
	okSeg := b2bSegment(0, 0, 1, 0, 1)
	ident := identCSCD(idA)
	many := func(x []byte, k int) [][]byte {
		out := make([][]byte, k)
		for i := range out {
			out[i] = x
		}
		return out
	}
	unsupportedSeg := make([]byte, 28)
	unsupportedSeg[0] = 0x03 // stream-to-stream
	binary.BigEndian.PutUint16(unsupportedSeg[2:], 24)
	fcCSCD := bytes.Clone(ident)
	fcCSCD[0] = 0xe0
	unknown := identCSCD([16]byte{0x60, 9, 9, 9})
	good := xcopyParams(1, 0, [][]byte{ident}, [][]byte{okSeg})
	cases := []struct {
		name string
		plen int
		data []byte
		key  SenseKey
		asc  ASC
	}{
		{"too many CSCDs", -1, xcopyParams(1, 0, many(ident, xcopyMaxCSCDs+1), [][]byte{okSeg}), KeyIllegalRequest, ASCTooManyTargetDescriptors},
		{"too many segments", -1, xcopyParams(1, 0, [][]byte{ident}, many(okSeg, xcopyMaxSegments+1)), KeyIllegalRequest, ASCTooManySegmentDescriptors},
		{"descriptor list too long", -1, xcopyParams(1, 0, many(ident, xcopyMaxCSCDs+1), many(okSeg, 30)), KeyIllegalRequest, ASCParameterListLength},
		{"unsupported CSCD type", -1, xcopyParams(1, 0, [][]byte{fcCSCD}, [][]byte{okSeg}), KeyIllegalRequest, ASCUnsupportedTargetDescType},
		{"unsupported segment type", -1, xcopyParams(1, 0, [][]byte{ident}, [][]byte{unsupportedSeg}), KeyIllegalRequest, ASCUnsupportedSegDescType},
		{"truncated CSCD", 16 + 31, good, KeyIllegalRequest, ASCParameterListLength},
		{"truncated segment", len(good) - 1, good, KeyIllegalRequest, ASCParameterListLength},
		{"short header", 8, good, KeyIllegalRequest, ASCParameterListLength},
		{"unknown LU", -1, xcopyParams(1, 0, [][]byte{unknown}, [][]byte{okSeg}), KeyCopyAborted, ASCCopyTargetDeviceNotReach},
		{"bad destination index", -1, xcopyParams(1, 0, [][]byte{ident}, [][]byte{b2bSegment(0, 1, 1, 0, 1)}), KeyCopyAborted, ASCCopyTargetDeviceNotReach},
		{"beyond end", -1, xcopyParams(1, 0, [][]byte{ident}, [][]byte{b2bSegment(0, 0, 2, 0, 63)}), KeyCopyAborted, ASCNoAdditional},
		{"reserved list id usage", -1, xcopyParams(1, 1, [][]byte{ident}, [][]byte{okSeg}), KeyIllegalRequest, ASCInvalidFieldInParam},
		{"list id with usage 11b", -1, xcopyParams(1, 3, [][]byte{ident}, [][]byte{okSeg}), KeyIllegalRequest, ASCInvalidFieldInParam},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, mbA, _, n := twoLUDevice(t)
			mbA.WriteAt(fill(512, 's'), 0)
			plen := c.plen
			if plen < 0 {
				plen = len(c.data)
			}
			data := c.data
			if plen < len(data) {
				data = data[:plen]
			}
			expectSense(t, run(d, n, xcopyCDB(plen), data, 0), c.key, c.asc)
			if !bytes.Equal(mbA.bytesAt(512, 63*512), make([]byte, 63*512)) {
				t.Fatal("a refused EXTENDED COPY wrote")
			}
		})
	}
	// An empty parameter list does nothing.
	d, _, _, n := twoLUDevice(t)
	expectGood(t, run(d, n, xcopyCDB(0), nil, 0))
	// SPC-4 ignores LU ID TYPE.
	id := bytes.Clone(ident)
	id[1] = 3 << 6
	p := xcopyParams(1, 0, [][]byte{id}, [][]byte{okSeg})
	expectGood(t, run(d, n, xcopyCDB(len(p)), p, 0))
}

func TestReceiveCopyResultsOperatingParameters(t *testing.T) {
	d, _, _, n := twoLUDevice(t)
	r := run(d, n, rcrCDB(0x03, 0, 1024), nil, 1024)
	expectGood(t, r)
	b := r.Data
	if len(b) < 44 || int(binary.BigEndian.Uint32(b))+4 != len(b) {
		t.Fatalf("OPERATING PARAMETERS length: %x", b)
	}
	if binary.BigEndian.Uint16(b[8:]) != xcopyMaxCSCDs || binary.BigEndian.Uint16(b[10:]) != xcopyMaxSegments ||
		binary.BigEndian.Uint32(b[12:]) != xcopyMaxDescListLen || binary.BigEndian.Uint32(b[16:]) != xcopyMaxSegmentLength {
		t.Fatalf("OPERATING PARAMETERS limits: %x", b)
	}
	codes := b[44 : 44+int(b[43])]
	if !bytes.Contains(codes, []byte{0x02}) || !bytes.Contains(codes, []byte{0xe4}) {
		t.Fatalf("implemented descriptors %x", codes)
	}
	// Allocation length truncates.
	if r := run(d, n, rcrCDB(0x03, 0, 10), nil, 10); r.Status != StatusGood || len(r.Data) > 10 {
		t.Fatalf("allocation length 10: %v %d bytes", r.Status, len(r.Data))
	}
}

func TestThirdPartyCopyVPD(t *testing.T) {
	_, lu, _ := testDevice(t, 8, LUConfig{})
	p := lu.thirdPartyCopyVPD()
	if len(p) < 4 || p[1] != 0x8f || int(binary.BigEndian.Uint16(p[2:]))+4 != len(p) {
		t.Fatalf("bad page header %x", p)
	}
	found := map[uint16][]byte{}
	for b := p[4:]; len(b) > 0; {
		if len(b) < 4 {
			t.Fatalf("truncated descriptor %x", b)
		}
		typ, l := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		if (4+l)%4 != 0 || 4+l > len(b) {
			t.Fatalf("descriptor %04x length %d", typ, l)
		}
		found[typ] = b[4 : 4+l]
		b = b[4+l:]
	}
	sc, ok := found[0x0001]
	if !ok {
		t.Fatal("no Supported Commands descriptor")
	}
	// Walk the command support list: RECEIVE COPY RESULTS with COPY STATUS.
	list := sc[1 : 1+int(sc[0])]
	var rcrStatus bool
	for len(list) >= 2 {
		op, n := list[0], int(list[1])
		for _, sa := range list[2 : 2+n] {
			if op == 0x84 && sa == 0x00 {
				rcrStatus = true
			}
		}
		list = list[2+n:]
	}
	if !rcrStatus {
		t.Fatal("RECEIVE COPY RESULTS / COPY STATUS not listed")
	}
	if _, ok := found[0x8001]; !ok {
		t.Fatal("no General Copy Operations descriptor")
	}
}

// An LU configured with only a serial number is named by the designator
// VPD page 0x83 derives from it.
func TestExtendedCopyFindsDerivedDesignator(t *testing.T) {
	d, lu, mb, n := readyDevice(t, 16, LUConfig{SerialNumber: "sn-xcopy"})
	mb.WriteAt(fill(512, 'k'), 0)
	p := xcopyParams(1, 0, [][]byte{identCSCD(lu.deviceID())}, [][]byte{b2bSegment(0, 0, 1, 0, 9)})
	expectGood(t, run(d, n, xcopyCDB(len(p)), p, 0))
	if !bytes.Equal(mb.bytesAt(9*512, 512), fill(512, 'k')) {
		t.Fatal("copy by derived designator did not copy")
	}
}

// A copy into another LU passes that LU's gates as a WRITE from the same
// nexus would: a reservation held by another nexus, or write protection,
// refuses it and nothing is written.
func TestExtendedCopyHonoursTargetGates(t *testing.T) {
	d, mbA, mbB, n := twoLUDevice(t)
	mbA.WriteAt(fill(512, 'r'), 0)
	other := testNexus(1)
	clearUAOn(d, other, 1)
	clearUAOn(d, n, 1)
	reserve6 := []byte{0x16, 0, 0, 0, 0, 0}
	expectGood(t, d.Execute(context.Background(), &Command{Nexus: other, LUN: 1, CDB: reserve6}))
	p := xcopyParams(1, 0, [][]byte{identCSCD(idA), identCSCD(idB)}, [][]byte{b2bSegment(0, 1, 1, 0, 0)})
	if r := run(d, n, xcopyCDB(len(p)), p, 0); r.Status != StatusReservationConflict {
		t.Fatalf("copy into a LU reserved by another nexus: %v %x", r.Status, r.Sense)
	}
	if !bytes.Equal(mbB.bytesAt(0, 512), make([]byte, 512)) {
		t.Fatal("refused copy wrote the reserved LU")
	}
	// Reading from it is refused as well under an SPC-2 reservation.
	p = xcopyParams(1, 0, [][]byte{identCSCD(idA), identCSCD(idB)}, [][]byte{b2bSegment(1, 0, 1, 0, 5)})
	if r := run(d, n, xcopyCDB(len(p)), p, 0); r.Status != StatusReservationConflict {
		t.Fatalf("copy from a LU reserved by another nexus: %v %x", r.Status, r.Sense)
	}
}

func TestExtendedCopyReadOnlyTarget(t *testing.T) {
	d, _, mbA := testDevice(t, 16, LUConfig{DeviceID: idA})
	mbA.WriteAt(fill(512, 'r'), 0)
	mbB := newMemBackend(16 * 512)
	luB, err := NewLU(mbB, LUConfig{BlockSize: 512, DeviceID: idB, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	d.AddLU(1, luB)
	n := testNexus(0)
	clearUA(d, n)
	p := xcopyParams(1, 0, [][]byte{identCSCD(idA), identCSCD(idB)}, [][]byte{b2bSegment(0, 1, 1, 0, 0)})
	expectSense(t, run(d, n, xcopyCDB(len(p)), p, 0), KeyDataProtect, ASCWriteProtected)
	if !bytes.Equal(mbB.bytesAt(0, 512), make([]byte, 512)) {
		t.Fatal("copy wrote a read-only LU")
	}
}

// clearUAOn issues TEST UNIT READY on lun until no unit attention is
// pending for n.
func clearUAOn(d *Device, n *Nexus, lun uint64) {
	for i := 0; i < 16; i++ {
		r := d.Execute(context.Background(), &Command{Nexus: n, LUN: lun, CDB: make([]byte, 6)})
		if r.Status != StatusCheckCondition || len(r.Sense) < 3 || r.Sense[2]&0xf != byte(KeyUnitAttention) {
			return
		}
	}
}

// A list identifier still running on the nexus is refused with OPERATION
// IN PROGRESS, and COPY STATUS reports it in progress; another nexus may
// use the same identifier.
func TestExtendedCopyListIDInUse(t *testing.T) {
	d, lu, _, n := readyDevice(t, 16, LUConfig{DeviceID: idA})
	lu.copy.mu.Lock()
	lu.copy.running[copyKey{nexus: n.Key(), listID: 7}] = true
	lu.copy.mu.Unlock()
	p := xcopyParams(7, 0, [][]byte{identCSCD(idA)}, [][]byte{b2bSegment(0, 0, 1, 0, 1)})
	expectSense(t, run(d, n, xcopyCDB(len(p)), p, 0), KeyIllegalRequest, ascOperationInProgress)
	r := run(d, n, rcrCDB(0x00, 7, 64), nil, 64)
	expectGood(t, r)
	if len(r.Data) != 12 || r.Data[4] != 0x00 {
		t.Fatalf("COPY STATUS of a running list: %x", r.Data)
	}
	other := testNexus(1)
	clearUA(d, other)
	expectGood(t, run(d, other, xcopyCDB(len(p)), p, 0))
	// LIST ID USAGE 11b ignores identifiers altogether.
	p = xcopyParams(0, 3, [][]byte{identCSCD(idA)}, [][]byte{b2bSegment(0, 0, 1, 0, 1)})
	expectGood(t, run(d, n, xcopyCDB(len(p)), p, 0))
}
