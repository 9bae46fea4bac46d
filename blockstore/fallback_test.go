package blockstore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The fallbacks for kernels and filesystems without a feature are forced
// on here, so they are tested where the feature exists.

func TestFileFallbacks(t *testing.T) {
	f := openTestFile(t, 4<<20, WriteBack)
	f.noPunch.Store(true) // as on a filesystem without FALLOC_FL_PUNCH_HOLE
	f.noRWF.Store(true)   // as on a kernel without pwritev2(RWF_DSYNC)

	p := pattern(1, 1<<20)
	if n, err := f.WriteAtFUA(p, 1<<20); err != nil || n != len(p) {
		t.Fatalf("WriteAtFUA = %d, %v", n, err)
	}
	if !bytes.Equal(mustRead(t, f, 1<<20, 1<<20), p) {
		t.Fatal("FUA fallback write did not read back")
	}
	if err := f.Unmap(1<<20+100, 3<<20/2); err != nil {
		t.Fatalf("Unmap by zeros: %v", err)
	}
	want := append([]byte(nil), p...)
	clear(want[100:])
	if !bytes.Equal(mustRead(t, f, 1<<20, 1<<20), want) {
		t.Fatal("zero-writing unmap did not zero its range exactly")
	}
	// Zeros were written, not punched: the range stays allocated.
	if mapped, _, err := f.MappedExtent(2 << 20); err != nil || !mapped {
		t.Fatalf("MappedExtent after zero-writing unmap = %v, %v; want mapped", mapped, err)
	}
}

func TestBlockDeviceFallbacks(t *testing.T) {
	dev, _ := loopDevice(t, 8<<20, 512)
	d := openTestDevice(t, dev, Options{})
	d.noPunch.Store(true) // as on a device without write-zeroes: BLKZEROOUT
	d.noRWF.Store(true)

	p := pattern(2, 1<<20)
	if n, err := d.WriteAtFUA(p, 1<<20); err != nil || n != len(p) {
		t.Fatalf("WriteAtFUA = %d, %v", n, err)
	}
	if err := d.Unmap(1<<20+512, 512<<10); err != nil {
		t.Fatalf("Unmap by BLKZEROOUT: %v", err)
	}
	want := append([]byte(nil), p...)
	clear(want[512 : 512+512<<10])
	if !bytes.Equal(mustRead(t, d, 1<<20, 1<<20), want) {
		t.Fatal("BLKZEROOUT unmap did not zero its range exactly")
	}
}

// TestBlockDeviceBuffered covers a device that refuses O_DIRECT: IO goes
// through the page cache, with no alignment needs.
func TestBlockDeviceBuffered(t *testing.T) {
	const size = 4 << 20
	path := filepath.Join(t.TempDir(), "dev.img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	d, err := newBlockDevice(f, path, Options{}, false, &geometry{size: size, logical: 512, phys: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Direct() || d.PhysicalBlockSize() != 4096 || d.LogicalBlockSize() != 512 {
		t.Fatalf("Direct %v, sectors %d/%d", d.Direct(), d.LogicalBlockSize(), d.PhysicalBlockSize())
	}
	testStoreContract(t, d, size)
}

func TestBlockDeviceGeometryChecks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, g := range []geometry{
		{size: 1 << 20, logical: 1000}, // not a power of two
		{size: 1 << 20, logical: 256},  // too small
		{size: 0, logical: 512},        // empty device
	} {
		if _, err := newBlockDevice(f, path, Options{}, false, &g); err == nil {
			t.Errorf("geometry %+v accepted", g)
		}
	}
}
