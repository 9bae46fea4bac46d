package scsi

import (
	"bytes"
	"testing"
)

// FuzzParameterLists feeds arbitrary parameter lists to the commands of
// this area that parse one (EXTENDED COPY, UNMAP, SANITIZE OVERWRITE): no
// panic, and the answer is GOOD, CONDITION MET or CHECK CONDITION with
// fixed sense.
func FuzzParameterLists(f *testing.F) {
	good := xcopyParams(1, 0, [][]byte{identCSCD(idA)}, [][]byte{b2bSegment(0, 0, 1, 0, 1)})
	f.Add(byte(0), good)
	f.Add(byte(0), xcopyParams(0, 3, [][]byte{identCSCD(idA), identCSCD(idA)}, [][]byte{b2bSegment(1, 0, 4, 60, 0)}))
	f.Add(byte(1), unmapParams([2]uint64{0, 4}, [2]uint64{10, 2}))
	f.Add(byte(2), overwriteParams(1, []byte{1, 2, 3}))
	mb := newMemBackend(64 * 512)
	lu, err := NewLU(mb, LUConfig{BlockSize: 512, WriteCache: true, Thin: true, DeviceID: idA})
	if err != nil {
		f.Fatal(err)
	}
	d := NewDevice(DeviceConfig{})
	d.AddLU(0, lu)
	n := testNexus(0)
	clearUA(d, n)
	f.Fuzz(func(t *testing.T, which byte, p []byte) {
		if len(p) > 4096 {
			return
		}
		var cdb []byte
		switch which % 3 {
		case 0:
			cdb = xcopyCDB(len(p))
		case 1:
			cdb = unmapCDB(false, len(p))
		case 2:
			cdb = sanitizeCDB(false, sanitizeOverwrite, len(p))
		}
		r := run(d, n, cdb, bytes.Clone(p), 1024)
		switch r.Status {
		case StatusGood, StatusConditionMet:
		case StatusCheckCondition:
			if len(r.Sense) != 18 || r.Sense[0]&0x7f != 0x70 {
				t.Fatalf("malformed sense %x", r.Sense)
			}
		default:
			t.Fatalf("unexpected status %v", r.Status)
		}
	})
}
