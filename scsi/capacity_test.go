package scsi

import "testing"

// TestReadCapacity16PhysicalBlock checks LOGICAL BLOCKS PER PHYSICAL BLOCK
// EXPONENT: 0 by default, 3 for a 512-byte LU with 4096-byte physical
// blocks (512e).
func TestReadCapacity16PhysicalBlock(t *testing.T) {
	for _, tc := range []struct {
		bs, pbs uint32
		want    byte
	}{{512, 0, 0}, {512, 4096, 3}, {512, 1024, 1}, {4096, 0, 0}, {4096, 4096, 0}} {
		d, _, _ := testDevice(t, 64, LUConfig{BlockSize: tc.bs, PhysicalBlockSize: tc.pbs})
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

// TestBlockLimitsGranularityMatchesPhysicalBlock checks that the Block
// Limits VPD page's OPTIMAL TRANSFER LENGTH GRANULARITY and OPTIMAL UNMAP
// GRANULARITY equal the physical block READ CAPACITY(16) reports.
func TestBlockLimitsGranularityMatchesPhysicalBlock(t *testing.T) {
	for _, tc := range []struct {
		bs, pbs uint32
		want    uint32
	}{{512, 4096, 8}, {512, 0, 1}, {4096, 0, 1}} {
		d, _, _ := testDevice(t, 64, LUConfig{BlockSize: tc.bs, PhysicalBlockSize: tc.pbs, Thin: true})
		n := testNexus(0)
		clearUA(d, n)
		r := run(d, n, []byte{0x12, 0x01, 0xb0, 0, 0xff, 0}, nil, 255)
		if r.Status != StatusGood || len(r.Data) < 32 {
			t.Fatalf("block size %d: VPD B0 status %v, %d bytes", tc.bs, r.Status, len(r.Data))
		}
		if got := uint32(r.Data[6])<<8 | uint32(r.Data[7]); got != tc.want {
			t.Errorf("block size %d: transfer granularity %d, want %d", tc.bs, got, tc.want)
		}
		if got := uint32(r.Data[28])<<24 | uint32(r.Data[29])<<16 | uint32(r.Data[30])<<8 | uint32(r.Data[31]); got != tc.want {
			t.Errorf("block size %d: unmap granularity %d, want %d", tc.bs, got, tc.want)
		}
	}
}

func TestPhysicalBlockSizeValidation(t *testing.T) {
	for _, c := range []LUConfig{{BlockSize: 512, PhysicalBlockSize: 256}, {BlockSize: 512, PhysicalBlockSize: 3000}, {BlockSize: 4096, PhysicalBlockSize: 8192}} {
		if _, err := NewLU(newMemBackend(1<<20), c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestReadOnlyReportsBadProtectFieldFirst checks that a WRITE with a
// non-zero WRPROTECT on a read-only LU is INVALID FIELD IN CDB, not DATA
// PROTECT, while a well-formed WRITE gets WRITE PROTECTED.
func TestReadOnlyReportsBadProtectFieldFirst(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{ReadOnly: true})
	n := testNexus(0)
	clearUA(d, n)
	bad := []byte{0x2a, 0x20, 0, 0, 0, 0, 0, 0, 1, 0}
	if key, asc := senseOf(t, run(d, n, bad, make([]byte, 512), 0)); key != KeyIllegalRequest || asc != ASCInvalidFieldInCDB {
		t.Fatalf("WRPROTECT=1 on read-only LU: %x/%04x", key, asc)
	}
	good := []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	if key, asc := senseOf(t, run(d, n, good, make([]byte, 512), 0)); key != KeyDataProtect || asc != ASCWriteProtected {
		t.Fatalf("WRITE on read-only LU: %x/%04x", key, asc)
	}
}
