package scsi

import "testing"

// TestReadCapacity16PhysicalBlock checks LOGICAL BLOCKS PER PHYSICAL BLOCK
// EXPONENT: 3 (4096-byte physical blocks) on a 512-byte LU, 0 on a
// 4096-byte LU.
func TestReadCapacity16PhysicalBlock(t *testing.T) {
	for _, tc := range []struct {
		bs   uint32
		want byte
	}{{512, 3}, {4096, 0}} {
		d, _, _ := testDevice(t, 64, LUConfig{BlockSize: tc.bs})
		n := testNexus(0)
		clearUA(d, n)
		cdb := make([]byte, 16)
		cdb[0], cdb[1], cdb[13] = 0x9e, 0x10, 32
		r := run(d, n, cdb, nil, 32)
		if r.Status != StatusGood || len(r.Data) < 14 {
			t.Fatalf("block size %d: status %v, %d bytes", tc.bs, r.Status, len(r.Data))
		}
		if got := r.Data[13] & 0x0f; got != tc.want {
			t.Errorf("block size %d: exponent %d, want %d", tc.bs, got, tc.want)
		}
	}
}
