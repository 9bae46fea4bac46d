package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"runtime"
	"testing"
)

func sanitizeCDB(immed bool, sa byte, plen int) []byte {
	c := make([]byte, 10)
	c[0], c[1] = 0x48, sa
	if immed {
		c[1] |= 0x80
	}
	binary.BigEndian.PutUint16(c[7:], uint16(plen))
	return c
}

// overwriteParams is a SANITIZE OVERWRITE parameter list.
func overwriteParams(count byte, pattern []byte) []byte {
	p := []byte{count, 0, 0, 0}
	binary.BigEndian.PutUint16(p[2:], uint16(len(pattern)))
	return append(p, pattern...)
}

func TestSanitizeOverwrite(t *testing.T) {
	d, lu, mb, n := readyDevice(t, 64, LUConfig{})
	mb.WriteAt(fill(64*512, 'a'), 0)
	p := overwriteParams(1, []byte{1, 2, 3})
	expectGood(t, run(d, n, sanitizeCDB(false, sanitizeOverwrite, len(p)), p, 0))
	// The 3-byte pattern repeats within every block, restarting at each.
	want := make([]byte, 512)
	for i := range want {
		want[i] = byte(1 + i%3)
	}
	for b := int64(0); b < 64; b++ {
		if !bytes.Equal(mb.bytesAt(b*512, 512), want) {
			t.Fatalf("block %d not overwritten with the pattern", b)
		}
	}
	if p := lu.atomic.sanitize.progress; p != 65535 {
		t.Fatalf("progress %d after the overwrite, want 65535", p)
	}
	// INVERT with an even count leaves the inverted pattern.
	p = overwriteParams(0x80|2, fill(512, 0x0f))
	expectGood(t, run(d, n, sanitizeCDB(false, sanitizeOverwrite, len(p)), p, 0))
	if !bytes.Equal(mb.bytesAt(10*512, 512), fill(512, 0xf0)) {
		t.Fatal("INVERT ignored")
	}
}

func TestSanitizeBlockErase(t *testing.T) {
	for _, thin := range []bool{true, false} {
		d, _, mb, n := readyDevice(t, 64, LUConfig{Thin: thin})
		mb.WriteAt(fill(64*512, 'a'), 0)
		expectGood(t, run(d, n, sanitizeCDB(false, sanitizeBlockErase, 0), nil, 0))
		if !bytes.Equal(mb.bytesAt(0, 64*512), make([]byte, 64*512)) {
			t.Fatalf("thin=%v: block erase left data", thin)
		}
		if mb.mapped[5] == thin {
			t.Fatalf("thin=%v: mapped=%v after block erase", thin, mb.mapped[5])
		}
	}
}

func TestSanitizeErrors(t *testing.T) {
	full := overwriteParams(1, fill(512, 0xaa))
	cases := []struct {
		name string
		cdb  []byte
		data []byte
		key  SenseKey
		asc  ASC
	}{
		{"overwrite plen 4", sanitizeCDB(false, sanitizeOverwrite, 4), full[:4], KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"overwrite plen 0", sanitizeCDB(false, sanitizeOverwrite, 0), nil, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"overwrite plen bs+5", sanitizeCDB(false, sanitizeOverwrite, 517), append(bytes.Clone(full), 0), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"overwrite count 0", sanitizeCDB(false, sanitizeOverwrite, len(full)), overwriteParams(0, fill(512, 1)), KeyIllegalRequest, ASCInvalidFieldInParam},
		{"pattern length 0", sanitizeCDB(false, sanitizeOverwrite, 8), []byte{1, 0, 0, 0, 0, 0, 0, 0}, KeyIllegalRequest, ASCInvalidFieldInParam},
		{"pattern length mismatch", sanitizeCDB(false, sanitizeOverwrite, 8), append([]byte{1, 0, 0, 0}, 1, 2, 3, 4), KeyIllegalRequest, ASCInvalidFieldInParam},
		{"short data", sanitizeCDB(false, sanitizeOverwrite, len(full)), full[:100], KeyIllegalRequest, ASCInvalidFieldInIU},
		{"block erase with list", sanitizeCDB(false, sanitizeBlockErase, 8), make([]byte, 8), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"exit failure mode with list", sanitizeCDB(false, sanitizeExitFailure, 8), make([]byte, 8), KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"reserved bit", sanitizeCDB(false, 0x40|sanitizeBlockErase, 0), nil, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"reserved byte", func() []byte { c := sanitizeCDB(false, sanitizeBlockErase, 0); c[4] = 4; return c }(), nil, KeyIllegalRequest, ASCInvalidFieldInCDB},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, _, mb, n := readyDevice(t, 64, LUConfig{Thin: true})
			mb.WriteAt(fill(64*512, 'x'), 0)
			expectSense(t, run(d, n, c.cdb, c.data, 0), c.key, c.asc)
			if !bytes.Equal(mb.bytesAt(0, 64*512), fill(64*512, 'x')) {
				t.Fatal("a refused SANITIZE changed the medium")
			}
		})
	}
}

func TestSanitizeImmedAndGate(t *testing.T) {
	d, lu, mb, n := readyDevice(t, 64, LUConfig{})
	mb.WriteAt(fill(64*512, 'a'), 0)
	expectGood(t, run(d, n, sanitizeCDB(true, sanitizeBlockErase, 0), nil, 0))
	for {
		lu.atomic.sanitize.mu.Lock()
		running := lu.atomic.sanitize.running
		lu.atomic.sanitize.mu.Unlock()
		if !running {
			break
		}
		runtime.Gosched()
	}
	if !bytes.Equal(mb.bytesAt(0, 64*512), make([]byte, 64*512)) {
		t.Fatal("background block erase left data")
	}

	// While running, the gate refuses medium access but not INQUIRY-like
	// commands.
	lu.atomic.sanitize.running = true
	read := &task{op: &opInfo{flags: opReadLike}}
	inq := &task{op: &opInfo{flags: opNoUA}}
	if err := lu.sanitizeGate(read); err == nil || err.(*SenseError).ASC != ASCLUNotReadySanitize {
		t.Fatalf("gate while sanitizing: %v", err)
	}
	lu.atomic.sanitize.progress = 0x8000
	if err := lu.sanitizeGate(read); err == nil || !bytes.Equal(err.(*SenseError).Fixed()[15:18], []byte{0x80, 0x80, 0x00}) {
		t.Fatalf("no progress indication while sanitizing: %v", err)
	}
	if se := lu.sanitizeSense(); se == nil || se.ASC != ASCLUNotReadySanitize || se.FieldPointer != 0x8000 {
		t.Fatalf("sanitizeSense while sanitizing: %v", se)
	}
	if err := lu.sanitizeGate(inq); err != nil {
		t.Fatalf("gate for INQUIRY while sanitizing: %v", err)
	}
	// A second SANITIZE is refused too.
	expectSense(t, run(d, n, sanitizeCDB(false, sanitizeBlockErase, 0), nil, 0), KeyNotReady, ASCLUNotReadySanitize)
	lu.atomic.sanitize.running = false
	if se := lu.sanitizeSense(); se != nil {
		t.Fatalf("sanitizeSense when idle: %v", se)
	}

	// Failure mode until EXIT FAILURE MODE.
	lu.atomic.sanitize.failed = true
	if err := lu.sanitizeGate(read); err == nil || err.(*SenseError).ASC != ascSanitizeFailed {
		t.Fatalf("gate in failure mode: %v", err)
	}
	expectGood(t, run(d, n, sanitizeCDB(false, sanitizeExitFailure, 0), nil, 0))
	if err := lu.sanitizeGate(read); err != nil {
		t.Fatalf("gate after EXIT FAILURE MODE: %v", err)
	}
}

func TestReadDefectData(t *testing.T) {
	d, _, _, n := readyDevice(t, 64, LUConfig{})
	c := make([]byte, 10)
	c[0], c[2] = 0x37, 0x18|0x05
	binary.BigEndian.PutUint16(c[7:], 32)
	r := run(d, n, c, nil, 32)
	expectGood(t, r)
	if !bytes.Equal(r.Data, []byte{0, 0x1d, 0, 0}) {
		t.Fatalf("READ DEFECT DATA (10) = %x", r.Data)
	}
	c = make([]byte, 12)
	c[0], c[1] = 0xb7, 0x08|0x03
	binary.BigEndian.PutUint32(c[6:], 64)
	r = run(d, n, c, nil, 64)
	expectGood(t, r)
	if !bytes.Equal(r.Data, []byte{0, 0x0b, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("READ DEFECT DATA (12) = %x", r.Data)
	}
	binary.BigEndian.PutUint32(c[6:], 2)
	if r = run(d, n, c, nil, 2); r.Status != StatusGood || len(r.Data) != 2 {
		t.Fatalf("allocation length 2: %v %x", r.Status, r.Data)
	}
}

func prefetchCDB(sixteen, immed bool, lba uint64, n uint32) []byte {
	var c []byte
	if sixteen {
		c = make([]byte, 16)
		c[0] = 0x90
		binary.BigEndian.PutUint64(c[2:], lba)
		binary.BigEndian.PutUint32(c[10:], n)
	} else {
		c = make([]byte, 10)
		c[0] = 0x34
		binary.BigEndian.PutUint32(c[2:], uint32(lba))
		binary.BigEndian.PutUint16(c[7:], uint16(n))
	}
	if immed {
		c[1] = 0x02
	}
	return c
}

func TestPreFetch(t *testing.T) {
	d, _, _, n := readyDevice(t, prefetchCacheBlocks+8, LUConfig{})
	last := uint64(prefetchCacheBlocks + 8)
	for _, sixteen := range []bool{false, true} {
		for _, c := range []struct {
			immed  bool
			lba    uint64
			n      uint32
			status Status
		}{
			{false, 0, 1, StatusConditionMet},
			{true, 0, 256, StatusConditionMet},
			{false, last - 1, 1, StatusConditionMet},
			{false, 0, 0, StatusConditionMet},
		} {
			r := run(d, n, prefetchCDB(sixteen, c.immed, c.lba, c.n), nil, 0)
			if r.Status != c.status {
				t.Fatalf("PRE-FETCH(16=%v) lba %d n %d: %v %x, want %v", sixteen, c.lba, c.n, r.Status, r.Sense, c.status)
			}
		}
		if sixteen {
			// More than the cache holds: GOOD, not CONDITION MET.
			expectGood(t, run(d, n, prefetchCDB(true, true, 0, prefetchCacheBlocks+1), nil, 0))
		}
		expectSense(t, run(d, n, prefetchCDB(sixteen, false, last+1, 0), nil, 0), KeyIllegalRequest, ASCLBAOutOfRange)
		expectSense(t, run(d, n, prefetchCDB(sixteen, false, last-1, 2), nil, 0), KeyIllegalRequest, ASCLBAOutOfRange)
	}
	expectSense(t, run(d, n, prefetchCDB(true, false, ^uint64(0), 1), nil, 0), KeyIllegalRequest, ASCLBAOutOfRange)
}

func TestFormatUnit(t *testing.T) {
	d, _, mb, n := readyDevice(t, 16, LUConfig{})
	mb.WriteAt(fill(16*512, 'f'), 0)
	fu := func(b1 byte) []byte { return []byte{0x04, b1, 0, 0, 0, 0} }
	expectGood(t, run(d, n, fu(0), nil, 0))
	expectGood(t, run(d, n, fu(0x10), []byte{0, 0x02, 0, 0}, 0))                                             // short header, IMMED
	expectGood(t, run(d, n, fu(0x30), []byte{0, 0, 0, 0, 0, 0, 0, 0}, 0))                                    // long header
	expectSense(t, run(d, n, fu(0x40), nil, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)                     // FMTPINFO
	expectSense(t, run(d, n, fu(0x08), nil, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)                     // CMPLST without data
	expectSense(t, run(d, n, fu(0x10), []byte{0, 0x08, 0, 0}, 0), KeyIllegalRequest, ASCInvalidFieldInParam) // IP
	expectSense(t, run(d, n, fu(0x10), []byte{0, 0, 0, 8}, 0), KeyIllegalRequest, ASCInvalidFieldInParam)    // defect list
	expectSense(t, run(d, n, fu(0x10), []byte{1, 0, 0, 0}, 0), KeyIllegalRequest, ASCInvalidFieldInParam)    // protection
	expectSense(t, run(d, n, fu(0x10), []byte{0, 0}, 0), KeyIllegalRequest, ASCInvalidFieldInIU)
	if !bytes.Equal(mb.bytesAt(0, 16*512), fill(16*512, 'f')) {
		t.Fatal("FORMAT UNIT changed the medium")
	}
}

func writeLongCDB(sixteen bool, flags byte, lba uint64, n uint16) []byte {
	if sixteen {
		c := make([]byte, 16)
		c[0], c[1] = 0x9f, 0x11|flags
		binary.BigEndian.PutUint64(c[2:], lba)
		binary.BigEndian.PutUint16(c[12:], n)
		return c
	}
	c := make([]byte, 10)
	c[0], c[1] = 0x3f, flags
	binary.BigEndian.PutUint32(c[2:], uint32(lba))
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}

func TestWriteLong(t *testing.T) {
	for _, sixteen := range []bool{false, true} {
		d, _, mb, n := readyDevice(t, 16, LUConfig{})
		expectGood(t, run(d, n, writeLongCDB(sixteen, 0, 5, 512), fill(512, 'L'), 0))
		if !bytes.Equal(mb.bytesAt(5*512, 512), fill(512, 'L')) {
			t.Fatalf("16=%v: WRITE LONG did not write the block", sixteen)
		}
		for _, flags := range []byte{0x40, 0x80, 0xc0, 0x20} {
			expectSense(t, run(d, n, writeLongCDB(sixteen, flags, 5, 0), nil, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
		}
		expectSense(t, run(d, n, writeLongCDB(sixteen, 0, 16, 512), fill(512, 1), 0), KeyIllegalRequest, ASCLBAOutOfRange)
		r := run(d, n, writeLongCDB(sixteen, 0, 5, 520), fill(520, 1), 0)
		expectSense(t, r, KeyIllegalRequest, ASCInvalidFieldInCDB)
		if info, ok := senseInfo(r); !ok || info != 8 {
			t.Fatalf("16=%v: INFORMATION %d valid %v, want 8", sixteen, info, ok)
		}
		r = run(d, n, writeLongCDB(sixteen, 0, 5, 510), fill(510, 1), 0)
		if info, ok := senseInfo(r); !ok || int32(info) != -2 {
			t.Fatalf("16=%v: INFORMATION %d valid %v, want -2", sixteen, int32(info), ok)
		}
		if !bytes.Equal(mb.bytesAt(5*512, 512), fill(512, 'L')) {
			t.Fatalf("16=%v: a refused WRITE LONG wrote", sixteen)
		}
	}
}

// TestSanitizeOutlivesAbort checks SBC-4 4.11.3: aborting the SANITIZE task
// does not stop the sanitize; the LU stays NOT READY, SANITIZE IN PROGRESS
// while it runs (libiscsi's Sanitize.Reset).
func TestSanitizeOutlivesAbort(t *testing.T) {
	// 64 blocks at 1 KiB/s: the overwrite takes about half a minute, far
	// longer than the checks below.
	d, _, _, n := readyDevice(t, 64, LUConfig{SanitizeRate: 1024})
	p := overwriteParams(1, fill(512, 0x5a))
	res := make(chan *Response, 1)
	go func() {
		res <- d.Execute(context.Background(), &Command{Nexus: n, Tag: 77, CDB: sanitizeCDB(false, sanitizeOverwrite, len(p)), Data: p, DataOutLen: uint32(len(p))})
	}()
	// Wait until the sanitize has started (TEST UNIT READY turns NOT READY).
	for {
		r := run(d, n, make([]byte, 6), nil, 0)
		if r.Status == StatusCheckCondition {
			break
		}
		runtime.Gosched()
	}
	if got := d.AbortTask(n, 0, 77); got != TMFComplete {
		t.Fatalf("ABORT TASK = %d", got)
	}
	if r := <-res; r.Status != StatusTaskAborted {
		t.Fatalf("aborted SANITIZE ended with %v, want TASK ABORTED", r.Status)
	}
	key, asc := senseOf(t, run(d, n, make([]byte, 6), nil, 0))
	if key != KeyNotReady || asc != ASCLUNotReadySanitize {
		t.Fatalf("after abort: sense %x/%04x, want NOT READY, SANITIZE IN PROGRESS", key, asc)
	}
}
