package blockstore

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// loopDevice backs a loop device with a sparse file of size bytes and
// returns the device and backing file paths; it skips the test, saying
// why, when loop devices cannot be set up here.
func loopDevice(t testing.TB, size int64, sector int) (dev, backing string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to set up a loop device")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	backing = filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	args := []string{"-f", "--show"}
	if sector != 512 {
		args = append(args, "--sector-size", itoa(sector))
	}
	args = append(args, backing)
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		t.Skipf("cannot set up a loop device (losetup %v): %v: %s", args, err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev, backing
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func openTestDevice(t testing.TB, dev string, opts Options) *BlockDevice {
	t.Helper()
	d, err := OpenBlockDevice(dev, opts)
	if err != nil {
		t.Fatalf("OpenBlockDevice(%s): %v", dev, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestBlockDeviceContract(t *testing.T) {
	const size = 8 << 20
	for _, sector := range []int{512, 4096} {
		for _, mode := range []Mode{WriteBack, WriteThrough} {
			t.Run(itoa(sector)+"/"+mode.String(), func(t *testing.T) {
				dev, _ := loopDevice(t, size, sector)
				d := openTestDevice(t, dev, Options{Mode: mode})
				if d.LogicalBlockSize() != sector {
					t.Fatalf("LogicalBlockSize = %d, want %d", d.LogicalBlockSize(), sector)
				}
				if !d.Direct() {
					t.Logf("%s refused O_DIRECT; testing the buffered path", dev)
				}
				testStoreContract(t, d, size)
			})
		}
	}
}

// TestBlockDeviceBouncePaths runs the O_DIRECT aligned, bounce and
// read-modify-write paths over a regular file posing as a 4 KiB-sector
// device, so they are covered where loop devices are not available.
func TestBlockDeviceBouncePaths(t *testing.T) {
	const size = 8 << 20
	path := filepath.Join(t.TempDir(), "dev.img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_DIRECT, 0o600)
	if err != nil {
		t.Skipf("this filesystem refuses O_DIRECT: %v", err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	d, err := newBlockDevice(f, path, Options{}, true, &geometry{size: size, logical: 4096, phys: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	testStoreContract(t, d, size)

	// The bounce buffer is used for large unaligned IO too (several
	// bounce-sized steps, partial sectors at both ends).
	raw := make([]byte, 3*bounceSize+1000)
	p := raw[7 : 7+3*bounceSize+100]
	copy(p, pattern(42, len(p)))
	before := mustRead(t, d, 0, 300)
	mustWrite(t, d, p, 300)
	got := make([]byte, len(p)+1)[1:]
	if n, err := d.ReadAt(got, 300); err != nil || n != len(p) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(got, p) {
		t.Fatal("multi-step bounce round trip differs")
	}
	if head := mustRead(t, d, 0, 300); !bytes.Equal(head, before) {
		t.Fatal("read-modify-write disturbed bytes before the write")
	}
}

func TestBlockDeviceUnmapDeallocates(t *testing.T) {
	const size = 8 << 20
	dev, backing := loopDevice(t, size, 512)
	d := openTestDevice(t, dev, Options{})
	mustWrite(t, d, pattern(1, 2<<20), 2<<20)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmap(2<<20, 1<<20); err != nil {
		t.Fatalf("Unmap: %v", err)
	}
	if got := mustRead(t, d, 2<<20, 1<<20); !bytes.Equal(got, make([]byte, 1<<20)) {
		t.Fatal("unmapped range does not read zeros")
	}
	if got := mustRead(t, d, 3<<20, 1<<20); !bytes.Equal(got, pattern(1, 2<<20)[1<<20:]) {
		t.Fatal("Unmap changed data after its range")
	}
	// The loop driver turns the zeroing unmap into a hole in its file.
	b, err := OpenFile(backing, Options{Mode: ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mapped, n, err := b.MappedExtent(2 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if mapped {
		t.Logf("loop device zeroed without deallocating (kernel without write-zeroes on loop); n=%d", n)
	} else if n != 1<<20 {
		t.Errorf("hole in backing file is %d bytes, want %d", n, 1<<20)
	}

	if err := d.Discard(0, 1<<20); err != nil {
		t.Errorf("Discard: %v", err)
	}
	if err := d.Discard(512+100, 4096); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("unaligned Discard = %v, want ErrOutOfRange", err)
	}
}

func TestBlockDeviceExclusive(t *testing.T) {
	dev, _ := loopDevice(t, 1<<20, 512)
	d := openTestDevice(t, dev, Options{})
	_, err := OpenBlockDevice(dev, Options{})
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), dev) {
		t.Fatalf("second open = %v, want ErrInUse naming %s", err, dev)
	}
	d.Close()
	e, err := OpenBlockDevice(dev, Options{})
	if err != nil {
		t.Fatalf("open after Close: %v", err)
	}
	e.Close()
}

func TestBlockDeviceReadOnlyAndSize(t *testing.T) {
	dev, _ := loopDevice(t, 1<<20, 512)
	w := openTestDevice(t, dev, Options{})
	mustWrite(t, w, []byte("keep"), 0)
	w.Close()

	r := openTestDevice(t, dev, Options{Mode: ReadOnly, Size: 512 << 10})
	if r.Size() != 512<<10 {
		t.Fatalf("Size = %d, want the requested %d", r.Size(), 512<<10)
	}
	if _, err := r.WriteAt([]byte("lost"), 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("WriteAt = %v, want EROFS", err)
	}
	if err := r.Unmap(0, 4096); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Unmap = %v, want EROFS", err)
	}
	if string(mustRead(t, r, 0, 4)) != "keep" {
		t.Fatal("data changed")
	}
	r.Close()

	for _, o := range []Options{{Size: 2 << 20}, {Size: 1000}} {
		if _, err := OpenBlockDevice(dev, o); !errors.Is(err, ErrSize) {
			t.Errorf("OpenBlockDevice(%+v) = %v, want ErrSize", o, err)
		}
	}
	if _, err := OpenBlockDevice(dev, Options{Size: 1 << 20, Create: true}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Create on a device = %v, want ErrInvalidOptions", err)
	}
}

func TestBlockDeviceRefusesRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenBlockDevice(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Fatalf("OpenBlockDevice(regular file) = %v", err)
	}
}
