package scsi

import (
	"bytes"
	"testing"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestReadWriteRoundTrip(t *testing.T) {
	d, _, mb := testDevice(t, 512, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	cases := []struct {
		name  string
		write []byte
		read  []byte
		lba   int64
		n     int
	}{
		{"10", cdb10(opWrite10, 0, 3, 2), cdb10(opRead10, 0, 3, 2), 3, 2},
		{"16", cdb16(opWrite16, 0x08, 100, 3), cdb16(opRead16, 0x18, 100, 3), 100, 3},
		{"12", func() []byte {
			c := make([]byte, 12)
			c[0] = opWrite12
			put32(c[2:], 7)
			put32(c[6:], 1)
			return c
		}(), func() []byte {
			c := make([]byte, 12)
			c[0] = opRead12
			put32(c[2:], 7)
			put32(c[6:], 1)
			return c
		}(), 7, 1},
		{"6 length 0 is 256", []byte{opWrite6, 0, 1, 0, 0, 0}, []byte{opRead6, 0, 1, 0, 0, 0}, 256, 256},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := pattern(tc.n*512, byte(i+1))
			wantGood(t, run(d, n, tc.write, data, 0))
			if got := mb.bytesAt(tc.lba*512, int64(len(data))); !bytes.Equal(got, data) {
				t.Fatal("backend does not hold the written data")
			}
			r := run(d, n, tc.read, nil, uint32(len(data)))
			wantGood(t, r)
			if !bytes.Equal(r.Data, data) {
				t.Fatal("read back differs")
			}
		})
	}
}

func TestBlockCommandErrors(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	blk := make([]byte, 512)
	cases := []struct {
		name string
		cdb  []byte
		data []byte
		key  SenseKey
		asc  ASC
	}{
		{"read beyond end", cdb10(opRead10, 0, 64, 1), nil, KeyIllegalRequest, ASCLBAOutOfRange},
		{"read straddling end", cdb10(opRead10, 0, 63, 2), nil, KeyIllegalRequest, ASCLBAOutOfRange},
		{"read16 lba -1", cdb16(opRead16, 0, ^uint64(0), 1), nil, KeyIllegalRequest, ASCLBAOutOfRange},
		{"read 0 blocks beyond end", cdb10(opRead10, 0, 65, 0), nil, KeyIllegalRequest, ASCLBAOutOfRange},
		{"read6 beyond end", []byte{opRead6, 0, 0, 64, 1, 0}, nil, KeyIllegalRequest, ASCLBAOutOfRange},
		{"rdprotect", cdb10(opRead10, 0x20, 0, 1), nil, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"wrprotect", cdb16(opWrite16, 0xe0, 0, 1), blk, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"vrprotect", cdb10(opVerify10, 0x40, 0, 1), nil, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"too long", cdb16(opRead16, 0, 0, 1<<20), nil, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"write beyond end", cdb10(opWrite10, 0, 64, 1), blk, KeyIllegalRequest, ASCLBAOutOfRange},
		{"write partial block", cdb10(opWrite10, 0, 0, 2), blk[:100], KeyIllegalRequest, ASCInvalidFieldInIU},
		{"bytchk 2", cdb10(opVerify10, 0x04, 0, 1), blk, KeyIllegalRequest, ASCInvalidFieldInCDB},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantSense(t, run(d, n, tc.cdb, tc.data, 512), tc.key, tc.asc)
		})
	}
	// Zero-length transfers are no-ops.
	wantGood(t, run(d, n, cdb10(opRead10, 0, 64, 0), nil, 0))
	wantGood(t, run(d, n, cdb10(opWrite10, 0, 0, 0), nil, 0))
}

func TestShortWrite(t *testing.T) {
	d, _, mb := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	// A partial block fails before anything is written.
	wantSense(t, run(d, n, cdb10(opWrite10, 0, 0, 1), bytes.Repeat([]byte{'b'}, 200), 0), KeyIllegalRequest, ASCInvalidFieldInIU)
	if !bytes.Equal(mb.bytesAt(0, 512), make([]byte, 512)) {
		t.Fatal("a short write changed the medium")
	}
	// Whole blocks short of the transfer length: those are written, no more.
	wantGood(t, run(d, n, cdb10(opWrite10, 0, 0, 2), bytes.Repeat([]byte{'b'}, 512), 0))
	if mb.bytesAt(0, 512)[511] != 'b' || mb.bytesAt(512, 1)[0] != 0 {
		t.Fatal("overflowing write wrote the wrong blocks")
	}
	wantGood(t, run(d, n, cdb10(opWriteVerify10, 0, 4, 1), nil, 0))
	if mb.bytesAt(4*512, 512)[0] != 0 {
		t.Fatal("write with no data changed the medium")
	}
	// More data than needed: only the CDB's length is written.
	wantGood(t, run(d, n, cdb10(opWrite10, 0, 0, 1), bytes.Repeat([]byte{'c'}, 1024), 0))
	if mb.bytesAt(0, 512)[511] != 'c' || mb.bytesAt(512, 1)[0] != 0 {
		t.Fatal("write with extra data wrote the wrong bytes")
	}
}

func TestReadOnlyAndSWP(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{ReadOnly: true})
	n := testNexus(0)
	clearUA(d, n)
	blk := make([]byte, 512)
	for _, c := range [][]byte{
		cdb10(opWrite10, 0, 0, 1), cdb16(opWrite16, 0, 0, 1), {opWrite6, 0, 0, 0, 1, 0},
		cdb10(opWriteVerify10, 0, 0, 1), cdb16(opWriteVerify16, 0, 0, 1),
		cdb10(opWrite10, 0, 1000, 1), // write protection comes before the range check
	} {
		wantSense(t, run(d, n, c, blk, 0), KeyDataProtect, ASCWriteProtected)
	}
	wantGood(t, run(d, n, cdb10(opRead10, 0, 0, 1), nil, 512))
	// Device-specific parameter WP in MODE SENSE.
	r := run(d, n, []byte{opModeSense6, 0, 0x3f, 0, 255, 0}, nil, 255)
	wantGood(t, r)
	if r.Data[2]&0x80 == 0 {
		t.Fatal("WP not set for a read-only LU")
	}
}

func TestFUAAndWriteCache(t *testing.T) {
	d, _, mb := testDevice(t, 64, LUConfig{WriteCache: true})
	n := testNexus(0)
	clearUA(d, n)
	blk := make([]byte, 512)
	f := mb.flushes
	wantGood(t, run(d, n, cdb10(opWrite10, 0, 0, 1), blk, 0))
	if mb.flushes != f {
		t.Fatal("write-back write flushed")
	}
	wantGood(t, run(d, n, cdb10(opWrite10, 0x08, 0, 1), blk, 0))
	if mb.flushes != f+1 {
		t.Fatal("FUA write did not flush")
	}
	wantGood(t, run(d, n, cdb10(opWriteVerify10, 0x02, 0, 1), blk, 0))
	if mb.flushes != f+2 {
		t.Fatal("WRITE AND VERIFY did not make the data durable")
	}
}

func TestVerify(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{})
	n := testNexus(0)
	clearUA(d, n)
	data := pattern(4*512, 9)
	wantGood(t, run(d, n, cdb10(opWrite10, 0, 10, 4), data, 0))

	wantGood(t, run(d, n, cdb10(opVerify10, 0x02, 10, 4), data, 0))
	wantGood(t, run(d, n, cdb16(opVerify16, 0x00, 10, 4), nil, 0)) // BYTCHK 0: no data
	bad := bytes.Clone(data)
	bad[3*512+17] ^= 'X'
	r := run(d, n, cdb10(opVerify10, 0x02, 10, 4), bad, 0)
	wantSense(t, r, KeyMiscompare, ASCMiscompareDuringVerify)
	if r.Sense[0]&0x80 == 0 || be32(r.Sense[3:]) != 3*512+17 {
		t.Fatalf("miscompare INFORMATION %x", r.Sense[:7])
	}
	wantSense(t, run(d, n, cdb10(opVerify10, 0x02, 62, 4), data, 0), KeyIllegalRequest, ASCLBAOutOfRange)

	// BYTCHK 11b: one block against each.
	same := bytes.Repeat([]byte{0x5a}, 512)
	wantGood(t, run(d, n, cdb10(opWrite10, 0, 20, 3), bytes.Repeat(same, 3), 0))
	wantGood(t, run(d, n, cdb10(opVerify10, 0x06, 20, 3), same, 0))
	wantSense(t, run(d, n, cdb10(opVerify10, 0x06, 19, 3), same, 0), KeyMiscompare, ASCMiscompareDuringVerify)
}

func TestDataOutLength(t *testing.T) {
	d, _, _ := testDevice(t, 64, LUConfig{BlockSize: 4096})
	cases := []struct {
		cdb  []byte
		n    uint32
		ok   bool
		name string
	}{
		{cdb10(opWrite10, 0, 0, 2), 8192, true, "WRITE(10)"},
		{[]byte{opWrite6, 0, 0, 0, 0, 0}, 256 * 4096, true, "WRITE(6) 0 = 256"},
		{cdb16(opWriteVerify16, 0, 0, 3), 3 * 4096, true, "WRITE AND VERIFY(16)"},
		{cdb10(opVerify10, 0x02, 0, 2), 8192, true, "VERIFY BYTCHK 1"},
		{cdb10(opVerify10, 0x06, 0, 2), 4096, true, "VERIFY BYTCHK 3"},
		{cdb10(opVerify10, 0x00, 0, 2), 0, true, "VERIFY BYTCHK 0"},
		{[]byte{opModeSelect6, 0x10, 0, 0, 28, 0}, 28, true, "MODE SELECT(6)"},
		{cdb10(opRead10, 0, 0, 2), 0, false, "READ is not Data-Out"},
		{[]byte{0xff}, 0, false, "unknown"},
	}
	for _, tc := range cases {
		n, ok := d.DataOutLength(0, tc.cdb)
		if n != tc.n || ok != tc.ok {
			t.Errorf("%s: got %d,%v want %d,%v", tc.name, n, ok, tc.n, tc.ok)
		}
	}
	if _, ok := d.DataOutLength(3, cdb10(opWrite10, 0, 0, 1)); ok {
		t.Error("absent LUN reported a length")
	}
}
