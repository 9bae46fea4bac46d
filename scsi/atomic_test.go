package scsi

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func cawCDB(flags byte, lba uint64, n byte) []byte {
	c := make([]byte, 16)
	c[0], c[1] = 0x89, flags
	binary.BigEndian.PutUint64(c[2:], lba)
	c[13] = n
	return c
}

func orwriteCDB(flags byte, lba uint64, n uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = 0x8b, flags
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], n)
	return c
}

func writeAtomicCDB(flags byte, lba uint64, n uint16) []byte {
	c := make([]byte, 16)
	c[0], c[1] = 0x9c, flags
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint16(c[12:], n)
	return c
}

// senseInfo returns the INFORMATION field of fixed sense data and whether
// it is valid.
func senseInfo(r *Response) (uint32, bool) {
	if len(r.Sense) < 7 {
		return 0, false
	}
	return binary.BigEndian.Uint32(r.Sense[3:]), r.Sense[0]&0x80 != 0
}

func TestCompareAndWrite(t *testing.T) {
	d, _, mb, n := readyDevice(t, 64, LUConfig{})
	mb.WriteAt(fill(2*512, 'A'), 10*512)

	// Match: the write data replaces the blocks.
	data := append(fill(2*512, 'A'), fill(2*512, 'B')...)
	expectGood(t, run(d, n, cawCDB(0, 10, 2), data, 0))
	if !bytes.Equal(mb.bytesAt(10*512, 2*512), fill(2*512, 'B')) {
		t.Fatal("COMPARE AND WRITE did not write on match")
	}

	// Miscompare at every offset of a small set: nothing written, the
	// INFORMATION field holds the offset of the first differing byte.
	for _, off := range []int{0, 1, 511, 512, 1000, 1023} {
		verify := fill(2*512, 'B')
		verify[off] = 'Z'
		if off < 1023 {
			verify[1023] = 'Y' // a later difference must not be reported
		}
		r := run(d, n, cawCDB(0, 10, 2), append(verify, fill(2*512, 'C')...), 0)
		expectSense(t, r, KeyMiscompare, ASCMiscompareDuringVerify)
		if info, ok := senseInfo(r); !ok || info != uint32(off) {
			t.Fatalf("miscompare at %d: INFORMATION %d valid %v", off, info, ok)
		}
		if !bytes.Equal(mb.bytesAt(10*512, 2*512), fill(2*512, 'B')) {
			t.Fatal("COMPARE AND WRITE wrote despite a miscompare")
		}
	}

	// Zero blocks is a no-op.
	expectGood(t, run(d, n, cawCDB(0, 10, 0), nil, 0))
	// FUA is accepted.
	expectGood(t, run(d, n, cawCDB(0x08, 10, 1), append(fill(512, 'B'), fill(512, 'D')...), 0))
	if !bytes.Equal(mb.bytesAt(10*512, 512), fill(512, 'D')) {
		t.Fatal("FUA COMPARE AND WRITE did not write")
	}
}

func TestCompareAndWriteErrors(t *testing.T) {
	two := make([]byte, 2*512)
	cases := []struct {
		name string
		cdb  []byte
		data []byte
		key  SenseKey
		asc  ASC
	}{
		{"wrprotect", cawCDB(0x20, 0, 1), two, KeyIllegalRequest, ASCInvalidFieldInCDB},
		{"beyond end", cawCDB(0, 64, 1), two, KeyIllegalRequest, ASCLBAOutOfRange},
		{"straddles end", cawCDB(0, 63, 2), make([]byte, 4*512), KeyIllegalRequest, ASCLBAOutOfRange},
		{"data too small", cawCDB(0, 0, 2), two, KeyIllegalRequest, ASCInvalidFieldInIU},
		{"data too large", cawCDB(0, 0, 1), make([]byte, 4*512), KeyIllegalRequest, ASCInvalidFieldInCDB},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, _, mb, n := readyDevice(t, 64, LUConfig{})
			expectSense(t, run(d, n, c.cdb, c.data, 0), c.key, c.asc)
			if !bytes.Equal(mb.bytesAt(0, 64*512), make([]byte, 64*512)) {
				t.Fatal("a refused COMPARE AND WRITE changed the medium")
			}
		})
	}
}

// TestCompareAndWriteCounter uses COMPARE AND WRITE as an atomic counter
// from many goroutines: each increment reads the block, then swaps old for
// old+1, retrying on miscompare. Without atomicity two swaps of the same
// old value both succeed and an increment is lost.
func TestCompareAndWriteCounter(t *testing.T) {
	mb := newMemBackend(8 * 512)
	lu, err := NewLU(yieldingBackend{mb}, LUConfig{BlockSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDevice(DeviceConfig{})
	d.AddLU(0, lu)
	const workers, perWorker = 8, 40
	var wg sync.WaitGroup
	var failures atomic.Int32
	for w := 0; w < workers; w++ {
		n := testNexus(w)
		clearUA(d, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				for {
					cur := mb.bytesAt(3*512, 512)
					v := binary.BigEndian.Uint64(cur)
					next := make([]byte, 512)
					binary.BigEndian.PutUint64(next, v+1)
					r := run(d, n, cawCDB(0, 3, 1), append(cur, next...), 0)
					if r.Status == StatusGood {
						break
					}
					if len(r.Sense) < 3 || SenseKey(r.Sense[2]&0xf) != KeyMiscompare {
						failures.Add(1)
						return
					}
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatal("COMPARE AND WRITE failed with something other than MISCOMPARE")
	}
	if got := binary.BigEndian.Uint64(mb.bytesAt(3*512, 8)); got != workers*perWorker {
		t.Fatalf("counter = %d, want %d: increments lost", got, workers*perWorker)
	}
}

// yieldingBackend gives other goroutines a chance to run between a read
// and the write that follows it, widening any race a missing lock leaves.
type yieldingBackend struct{ *memBackend }

func (y yieldingBackend) ReadAt(p []byte, off int64) (int, error) {
	n, err := y.memBackend.ReadAt(p, off)
	for i := 0; i < 3; i++ {
		runtime.Gosched()
	}
	return n, err
}

func TestORWrite(t *testing.T) {
	d, _, mb, n := readyDevice(t, 64, LUConfig{})
	mb.WriteAt(fill(2*512, 0xa0), 5*512)
	expectGood(t, run(d, n, orwriteCDB(0, 5, 2), fill(2*512, 0x05), 0))
	if !bytes.Equal(mb.bytesAt(5*512, 2*512), fill(2*512, 0xa5)) {
		t.Fatal("ORWRITE did not OR the data into the medium")
	}
	expectGood(t, run(d, n, orwriteCDB(0, 5, 0), nil, 0))
	expectSense(t, run(d, n, orwriteCDB(0, 63, 2), fill(2*512, 1), 0), KeyIllegalRequest, ASCLBAOutOfRange)
	expectSense(t, run(d, n, orwriteCDB(0x20, 0, 1), fill(512, 1), 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
	expectSense(t, run(d, n, orwriteCDB(0, 0, 2), fill(512, 1), 0), KeyIllegalRequest, ASCInvalidFieldInIU)
	if !bytes.Equal(mb.bytesAt(0, 512), make([]byte, 512)) {
		t.Fatal("a refused ORWRITE changed the medium")
	}
}

func TestWriteAtomic(t *testing.T) {
	d, _, mb, n := readyDevice(t, 4096, LUConfig{})
	expectGood(t, run(d, n, writeAtomicCDB(0, 7, 3), fill(3*512, 'w'), 0))
	if !bytes.Equal(mb.bytesAt(7*512, 3*512), fill(3*512, 'w')) {
		t.Fatal("WRITE ATOMIC did not write")
	}
	expectGood(t, run(d, n, writeAtomicCDB(0x08, 4095, 1), fill(512, 'e'), 0))
	expectGood(t, run(d, n, writeAtomicCDB(0, 0, 0), nil, 0))
	expectSense(t, run(d, n, writeAtomicCDB(0, 0, maxAtomicTransferLength+1), make([]byte, (maxAtomicTransferLength+1)*512), 0),
		KeyIllegalRequest, ASCInvalidFieldInCDB)
	expectSense(t, run(d, n, writeAtomicCDB(0, 4095, 2), fill(2*512, 1), 0), KeyIllegalRequest, ASCLBAOutOfRange)
	expectSense(t, run(d, n, writeAtomicCDB(0x40, 0, 1), fill(512, 1), 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
	if !bytes.Equal(mb.bytesAt(0, 512), make([]byte, 512)) {
		t.Fatal("a refused WRITE ATOMIC changed the medium")
	}
}

func TestLockRange(t *testing.T) {
	_, lu, _ := testDevice(t, 64, LUConfig{})
	unlock := lu.lockRange(10, 5)

	// Non-overlapping ranges and zero-length locks do not wait.
	lu.lockRange(0, 10)()
	lu.lockRange(15, 5)()
	lu.lockRange(12, 0)()

	// An overlapping lock waits for the unlock.
	var got atomic.Bool
	done := make(chan struct{})
	go func() {
		u := lu.lockRange(14, 10)
		got.Store(true)
		u()
		close(done)
	}()
	for i := 0; i < 100; i++ {
		runtime.Gosched()
	}
	if got.Load() {
		t.Fatal("overlapping lockRange acquired while held")
	}
	unlock()
	unlock() // a second unlock is harmless
	<-done

	// Shared holders share; an exclusive one waits for both.
	s1 := lu.lockRangeShared(0, 8)
	s2 := lu.lockRangeShared(4, 8)
	got.Store(false)
	done = make(chan struct{})
	go func() {
		u := lu.lockRange(6, 1)
		got.Store(true)
		u()
		close(done)
	}()
	for i := 0; i < 100; i++ {
		runtime.Gosched()
	}
	s1()
	for i := 0; i < 100; i++ {
		runtime.Gosched()
	}
	if got.Load() {
		t.Fatal("exclusive lockRange acquired while a shared holder remains")
	}
	s2()
	<-done
	if n := len(lu.atomic.held); n != 0 {
		t.Fatalf("%d ranges still held", n)
	}
}
