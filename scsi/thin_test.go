package scsi

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sync"
	"testing"
)

// expectSense fails unless r is CHECK CONDITION with key and asc.
func expectSense(t *testing.T, r *Response, key SenseKey, asc ASC) {
	t.Helper()
	k, a := senseOf(t, r)
	if k != key || a != asc {
		t.Fatalf("sense %#x/%04x, want %#x/%04x", k, a, key, asc)
	}
}

// expectGood fails unless r is GOOD.
func expectGood(t *testing.T, r *Response) {
	t.Helper()
	if r.Status != StatusGood {
		t.Fatalf("status %v sense %x, want GOOD", r.Status, r.Sense)
	}
}

// readyDevice is testDevice with the power-on unit attention cleared for
// nexus 0.
func readyDevice(t *testing.T, blocks int64, cfg LUConfig) (*Device, *LU, *memBackend, *Nexus) {
	t.Helper()
	d, lu, mb := testDevice(t, blocks, cfg)
	n := testNexus(0)
	clearUA(d, n)
	return d, lu, mb, n
}

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func unmapCDB(anchor bool, plen int) []byte {
	c := make([]byte, 10)
	c[0] = 0x42
	if anchor {
		c[1] = 1
	}
	binary.BigEndian.PutUint16(c[7:], uint16(plen))
	return c
}

// unmapParams builds an UNMAP parameter list of (lba, n) pairs.
func unmapParams(ext ...[2]uint64) []byte {
	p := make([]byte, 8+16*len(ext))
	binary.BigEndian.PutUint16(p[0:], uint16(len(p)-2))
	binary.BigEndian.PutUint16(p[2:], uint16(16*len(ext)))
	for i, e := range ext {
		binary.BigEndian.PutUint64(p[8+16*i:], e[0])
		binary.BigEndian.PutUint32(p[8+16*i+8:], uint32(e[1]))
	}
	return p
}

func ws16CDB(flags byte, lba uint64, n uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = 0x93, flags
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], n)
	return c
}

func ws10CDB(flags byte, lba uint32, n uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = 0x41, flags
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}

func getLBAStatusCDB(lba uint64, alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = 0x9e, 0x12
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], alloc)
	return c
}

type lbaStatus struct {
	lba    uint64
	n      uint32
	status byte
}

func parseLBAStatus(t *testing.T, data []byte) []lbaStatus {
	t.Helper()
	if len(data) < 8 || int(binary.BigEndian.Uint32(data))+4 != len(data) {
		t.Fatalf("bad GET LBA STATUS data %x", data)
	}
	var out []lbaStatus
	for d := data[8:]; len(d) >= 16; d = d[16:] {
		out = append(out, lbaStatus{binary.BigEndian.Uint64(d), binary.BigEndian.Uint32(d[8:]), d[12]})
	}
	return out
}

func TestUnmapDeallocatesAndGetLBAStatusReportsIt(t *testing.T) {
	d, _, mb, n := readyDevice(t, 64, LUConfig{Thin: true})
	mb.WriteAt(fill(16*512, 'a'), 0)
	p := unmapParams([2]uint64{2, 3}, [2]uint64{8, 4}, [2]uint64{40, 0})
	expectGood(t, run(d, n, unmapCDB(false, len(p)), p, 0))
	for b := int64(0); b < 16; b++ {
		got := mb.bytesAt(b*512, 512)
		unmapped := (b >= 2 && b < 5) || (b >= 8 && b < 12)
		want := fill(512, 'a')
		if unmapped {
			want = make([]byte, 512)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("block %d: got %q..., unmapped=%v", b, got[:4], unmapped)
		}
	}
	r := run(d, n, getLBAStatusCDB(0, 1024), nil, 1024)
	expectGood(t, r)
	got := parseLBAStatus(t, r.Data)
	want := []lbaStatus{{0, 2, 0}, {2, 3, 1}, {5, 3, 0}, {8, 4, 1}, {12, 4, 0}, {16, 48, 1}}
	if len(got) != len(want) {
		t.Fatalf("descriptors %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("descriptor %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// An allocation length of 24 holds exactly one descriptor, starting
	// at the requested LBA.
	r = run(d, n, getLBAStatusCDB(9, 24), nil, 24)
	expectGood(t, r)
	if got := parseLBAStatus(t, r.Data); len(got) != 1 || got[0] != (lbaStatus{9, 3, 1}) {
		t.Fatalf("alloc 24: %+v", got)
	}
}

func TestUnmapErrors(t *testing.T) {
	many := make([][2]uint64, maxUnmapDescriptorCount+1)
	for i := range many {
		many[i] = [2]uint64{uint64(i), 1}
	}
	tooMany := unmapParams(many...)
	cases := []struct {
		name string
		thin bool
		cdb  []byte
		data []byte
		key  SenseKey
		asc  ASC
	}{
		{"not thin", false, unmapCDB(false, 24), unmapParams([2]uint64{0, 1}), KeyIllegalRequest, ASCInvalidOpcode},
		{"anchor", true, unmapCDB(true, 24), unmapParams([2]uint64{0, 1}), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"short list", true, unmapCDB(false, 4), make([]byte, 4), KeyIllegalRequest, ASCParameterListLength},
		{"beyond end", true, unmapCDB(false, 24), unmapParams([2]uint64{60, 5}), KeyIllegalRequest, ASCLBAOutOfRange},
		{"lba past end", true, unmapCDB(false, 24), unmapParams([2]uint64{65, 0}), KeyIllegalRequest, ASCLBAOutOfRange},
		{"too many descriptors", true, unmapCDB(false, len(tooMany)), tooMany, KeyIllegalRequest, ASCInvalidFieldInParam},
		{"count over limit", true, unmapCDB(false, 24), unmapParams([2]uint64{0, maxUnmapLBACount + 1}), KeyIllegalRequest, ASCInvalidFieldInParam},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, _, mb, n := readyDevice(t, 64, LUConfig{Thin: c.thin})
			mb.WriteAt(fill(64*512, 'x'), 0)
			expectSense(t, run(d, n, c.cdb, c.data, 0), c.key, c.asc)
			if !bytes.Equal(mb.bytesAt(0, 64*512), fill(64*512, 'x')) {
				t.Fatal("a refused UNMAP changed the medium")
			}
		})
	}
	// Zero-length lists and zero-block descriptors are no-ops.
	d, _, _, n := readyDevice(t, 64, LUConfig{Thin: true})
	expectGood(t, run(d, n, unmapCDB(false, 0), nil, 0))
	p := unmapParams([2]uint64{64, 0})
	expectGood(t, run(d, n, unmapCDB(false, len(p)), p, 0))
}

// countingBackend counts WriteAt calls.
type countingBackend struct {
	*memBackend
	mu     sync.Mutex
	writes int
}

func (c *countingBackend) WriteAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.memBackend.WriteAt(p, off)
}

func TestWriteSameWritesInLargeChunks(t *testing.T) {
	const blocks = 4096 // 2 MiB of 512-byte blocks
	cb := &countingBackend{memBackend: newMemBackend(blocks * 512)}
	lu, err := NewLU(cb, LUConfig{BlockSize: 512, WriteCache: true})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDevice(DeviceConfig{})
	d.AddLU(0, lu)
	n := testNexus(0)
	clearUA(d, n)
	pat := make([]byte, 512)
	for i := range pat {
		pat[i] = byte(i)
	}
	expectGood(t, run(d, n, ws16CDB(0, 0, blocks), pat, 0))
	for b := 0; b < blocks; b++ {
		if !bytes.Equal(cb.bytesAt(int64(b)*512, 512), pat) {
			t.Fatalf("block %d not written", b)
		}
	}
	if cb.writes > blocks*512/writeSameChunk {
		t.Fatalf("%d backend writes for %d bytes, want chunks of %d", cb.writes, blocks*512, writeSameChunk)
	}
}

func TestWriteSame(t *testing.T) {
	d, _, mb, n := readyDevice(t, 64, LUConfig{Thin: true})
	mb.WriteAt(fill(64*512, 'x'), 0)

	// WRITE SAME (10) with a pattern.
	expectGood(t, run(d, n, ws10CDB(0, 4, 3), fill(512, 'p'), 0))
	if !bytes.Equal(mb.bytesAt(4*512, 3*512), fill(3*512, 'p')) || !bytes.Equal(mb.bytesAt(7*512, 512), fill(512, 'x')) {
		t.Fatal("WRITE SAME (10) wrote the wrong blocks")
	}
	// UNMAP bit with a zero block deallocates.
	expectGood(t, run(d, n, ws16CDB(0x08, 10, 5), make([]byte, 512), 0))
	for s := 10; s < 15; s++ {
		if mb.mapped[s] {
			t.Fatalf("block %d still mapped after WRITE SAME UNMAP", s)
		}
	}
	if !bytes.Equal(mb.bytesAt(10*512, 5*512), make([]byte, 5*512)) {
		t.Fatal("unmapped blocks do not read as zeros")
	}
	// The UNMAP bit deallocates even with non-zero data (LBPRZ: zeros).
	mb.WriteAt(fill(2*512, 'x'), 20*512)
	expectGood(t, run(d, n, ws16CDB(0x08, 20, 2), fill(512, 'q'), 0))
	if !bytes.Equal(mb.bytesAt(20*512, 2*512), make([]byte, 2*512)) || mb.mapped[20] {
		t.Fatal("WRITE SAME UNMAP with data did not deallocate")
	}
	// NDOB: no Data-Out, zeros.
	expectGood(t, run(d, n, ws16CDB(0x01, 30, 2), nil, 0))
	if !bytes.Equal(mb.bytesAt(30*512, 2*512), make([]byte, 2*512)) || !mb.mapped[30] {
		t.Fatal("WRITE SAME NDOB did not write zeros")
	}
	// To the last block.
	expectGood(t, run(d, n, ws16CDB(0, 63, 1), fill(512, 'e'), 0))
	if !bytes.Equal(mb.bytesAt(63*512, 512), fill(512, 'e')) {
		t.Fatal("last block not written")
	}
}

func TestWriteSameErrors(t *testing.T) {
	blk := fill(512, 'z')
	cases := []struct {
		name string
		thin bool
		cdb  []byte
		data []byte
		key  SenseKey
		asc  ASC
	}{
		{"zero blocks beyond end", true, ws16CDB(0, 65, 0), blk, KeyIllegalRequest, ASCLBAOutOfRange},
		{"over max length", true, ws16CDB(0, 0, maxWriteSameBytes/512+1), blk, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"anchor", true, ws16CDB(0x18, 0, 1), make([]byte, 512), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"anchor without unmap", true, ws10CDB(0x10, 0, 1), blk, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"unmap on thick LU", false, ws16CDB(0x08, 0, 1), make([]byte, 512), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"wrprotect", true, ws16CDB(0x20, 0, 1), blk, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"beyond end", true, ws16CDB(0, 63, 2), blk, KeyIllegalRequest, ASCLBAOutOfRange},
		{"lba -1", true, ws10CDB(0, 0xffffffff, 1), blk, KeyIllegalRequest, ASCLBAOutOfRange},
		{"short data", true, ws16CDB(0, 0, 1), blk[:256], KeyIllegalRequest, ASCInvalidFieldInIU},
		{"long data", true, ws16CDB(0, 0, 1), fill(1024, 'z'), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"ndob with data", true, ws16CDB(0x01, 0, 1), blk, KeyIllegalRequest, ASCInvalidFieldInCDB},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, _, mb, n := readyDevice(t, 64, LUConfig{Thin: c.thin})
			mb.WriteAt(fill(64*512, 'x'), 0)
			expectSense(t, run(d, n, c.cdb, c.data, 0), c.key, c.asc)
			if !bytes.Equal(mb.bytesAt(0, 64*512), fill(64*512, 'x')) {
				t.Fatal("a refused WRITE SAME changed the medium")
			}
		})
	}
}

// TestWriteSameWorkIsBounded: one WRITE SAME writes at most 64 MiB, so
// NUMBER OF LOGICAL BLOCKS 0 ("to the end") on a larger LU is refused
// with INVALID FIELD IN CDB (SBC-3 5.42) and writes nothing, while the
// same from near the end is done.
func TestWriteSameWorkIsBounded(t *testing.T) {
	if maxWriteSameBytes > 64<<20 {
		t.Fatalf("one WRITE SAME may write %d MiB: more than 64 MiB holds its range for seconds and floods the page cache of every copy", maxWriteSameBytes>>20)
	}
	blocks := int64(maxWriteSameBytes/512 + 8)
	d, lu, mb, n := readyDevice(t, blocks, LUConfig{Thin: true})
	if got := lu.maxWriteSameBlocks(); got != maxWriteSameBytes/512 {
		t.Fatalf("MAXIMUM WRITE SAME LENGTH %d blocks, want %d", got, maxWriteSameBytes/512)
	}
	expectSense(t, run(d, n, ws16CDB(0, 0, 0), fill(512, 'w'), 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
	if slices.Contains(mb.mapped, true) {
		t.Fatal("a refused WRITE SAME wrote")
	}
	expectGood(t, run(d, n, ws16CDB(0, uint64(blocks-8), 0), fill(512, 'w'), 0))
	if !bytes.Equal(mb.bytesAt((blocks-8)*512, 8*512), fill(8*512, 'w')) {
		t.Fatal("WRITE SAME of the last 8 blocks (NUMBER OF LOGICAL BLOCKS 0) not written")
	}
}

func TestGetLBAStatusEdges(t *testing.T) {
	d, _, _, n := readyDevice(t, 64, LUConfig{Thin: true})
	for _, lba := range []uint64{64, 65, 1 << 63, ^uint64(0)} {
		expectSense(t, run(d, n, getLBAStatusCDB(lba, 24), nil, 24), KeyIllegalRequest, ASCLBAOutOfRange)
	}
	// The last block.
	r := run(d, n, getLBAStatusCDB(63, 24), nil, 24)
	expectGood(t, r)
	if got := parseLBAStatus(t, r.Data); len(got) != 1 || got[0].lba != 63 || got[0].n != 1 {
		t.Fatalf("last block: %+v", got)
	}
	// A thick LU reports everything mapped.
	d, _, _, n = readyDevice(t, 64, LUConfig{})
	r = run(d, n, getLBAStatusCDB(3, 100), nil, 100)
	expectGood(t, r)
	if got := parseLBAStatus(t, r.Data); len(got) != 1 || got[0] != (lbaStatus{3, 61, lbaMapped}) {
		t.Fatalf("thick LU: %+v", got)
	}
}

// A write-through LU makes a WRITE SAME durable before status, with one
// flush for the whole range rather than one per chunk.
func TestWriteSameWriteThroughFlushes(t *testing.T) {
	d, _, mb, n := readyDevice(t, 4096, LUConfig{})
	before := mb.flushes
	expectGood(t, run(d, n, ws16CDB(0, 0, 4096), fill(512, 'f'), 0))
	if got := mb.flushes - before; got != 1 {
		t.Fatalf("%d flushes, want 1", got)
	}
	if !bytes.Equal(mb.bytesAt(4095*512, 512), fill(512, 'f')) {
		t.Fatal("last block not written")
	}
}

// On a write-through LU an UNMAP is durable before status.
func TestUnmapWriteThroughFlushes(t *testing.T) {
	d, _, mb, n := readyDevice(t, 64, LUConfig{Thin: true})
	before := mb.flushes
	p := unmapParams([2]uint64{0, 8})
	expectGood(t, run(d, n, unmapCDB(false, len(p)), p, 0))
	if mb.flushes == before {
		t.Fatal("UNMAP on a write-through LU did not flush")
	}
}

// With 4096-byte blocks, block numbers and byte offsets convert by the
// LU's block size, not the backend's sector size.
func TestThin4096(t *testing.T) {
	d, _, mb, n := readyDevice(t, 16, LUConfig{Thin: true, BlockSize: 4096})
	mb.WriteAt(fill(16*4096, 'a'), 0)
	expectGood(t, run(d, n, ws16CDB(0x08, 2, 2), make([]byte, 4096), 0))
	p := unmapParams([2]uint64{10, 1})
	expectGood(t, run(d, n, unmapCDB(false, len(p)), p, 0))
	if !bytes.Equal(mb.bytesAt(2*4096, 2*4096), make([]byte, 2*4096)) || !bytes.Equal(mb.bytesAt(4*4096, 4096), fill(4096, 'a')) {
		t.Fatal("WRITE SAME UNMAP deallocated the wrong bytes")
	}
	r := run(d, n, getLBAStatusCDB(0, 1024), nil, 1024)
	expectGood(t, r)
	got := parseLBAStatus(t, r.Data)
	want := []lbaStatus{{0, 2, 0}, {2, 2, 1}, {4, 6, 0}, {10, 1, 1}, {11, 5, 0}}
	if len(got) != len(want) {
		t.Fatalf("descriptors %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("descriptor %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestWriteSameZeroBlocksToEnd checks WSNZ=0: NUMBER OF LOGICAL BLOCKS 0
// writes from the LBA to the end of the LU.
func TestWriteSameZeroBlocksToEnd(t *testing.T) {
	d, _, mb, n := readyDevice(t, 64, LUConfig{})
	mb.WriteAt(fill(64*512, 'x'), 0)
	expectGood(t, run(d, n, ws10CDB(0, 60, 0), fill(512, 'q'), 0))
	if !bytes.Equal(mb.bytesAt(60*512, 4*512), fill(4*512, 'q')) {
		t.Fatal("blocks 60-63 not written")
	}
	if !bytes.Equal(mb.bytesAt(0, 60*512), fill(60*512, 'x')) {
		t.Fatal("blocks before the LBA changed")
	}
}
