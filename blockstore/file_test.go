package blockstore

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

func openTestFile(t *testing.T, size int64, mode Mode) *File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lun.img")
	f, err := OpenFile(path, Options{Size: size, Create: true, Mode: mode})
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestFileContract(t *testing.T) {
	const size = 4 << 20
	for _, mode := range []Mode{WriteBack, WriteThrough} {
		t.Run(mode.String(), func(t *testing.T) {
			testStoreContract(t, openTestFile(t, size, mode), size)
		})
	}
	t.Run("Extents", func(t *testing.T) { testExtents(t, openTestFile(t, size, WriteBack)) })
}

func TestFileSparse(t *testing.T) {
	const size = 1 << 30
	f := openTestFile(t, size, WriteBack)
	alloc, err := f.AllocatedBytes()
	if err != nil {
		t.Fatal(err)
	}
	if alloc > 64<<10 {
		t.Fatalf("new 1 GiB file has %d bytes allocated; want it sparse", alloc)
	}
	mustWrite(t, f, pattern(1, 1<<20), 512<<20)
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	after, _ := f.AllocatedBytes()
	if after < 1<<20 || after > 2<<20 {
		t.Fatalf("after a 1 MiB write: %d bytes allocated", after)
	}
	// Punching the write out gives the space back and leaves a hole.
	if err := f.Unmap(512<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	if punched, _ := f.AllocatedBytes(); punched > alloc+64<<10 {
		t.Fatalf("after punching: %d bytes allocated, want about %d", punched, alloc)
	}
	if mapped, n, err := f.MappedExtent(512 << 20); err != nil || mapped || n != size-512<<20 {
		t.Fatalf("MappedExtent after punch = %v, %d, %v", mapped, n, err)
	}
	if got := mustRead(t, f, 512<<20, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("punched range does not read zeros")
	}
}

func TestFileSizeRules(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lun.img")

	if _, err := OpenFile(path, Options{Size: 1 << 20}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file without Create: %v", err)
	}
	f, err := OpenFile(path, Options{Size: 1 << 20, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, []byte("data"), 0)
	f.Close()

	for _, c := range []struct {
		name string
		o    Options
		err  error
		size int64
	}{
		{"existing size", Options{}, nil, 1 << 20},
		{"same size", Options{Size: 1 << 20}, nil, 1 << 20},
		{"smaller request", Options{Size: 4096}, ErrSize, 0},
		{"larger without grow", Options{Size: 2 << 20}, ErrSize, 0},
		{"grow", Options{Size: 2 << 20, Grow: true}, nil, 2 << 20},
		{"create existing keeps data", Options{Size: 2 << 20, Create: true}, nil, 2 << 20},
	} {
		f, err := OpenFile(path, c.o)
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Fatalf("%s: OpenFile err = %v, want %v", c.name, err, c.err)
		}
		if err != nil {
			continue
		}
		if f.Size() != c.size {
			t.Errorf("%s: Size = %d, want %d", c.name, f.Size(), c.size)
		}
		if string(mustRead(t, f, 0, 4)) != "data" {
			t.Errorf("%s: data lost", c.name)
		}
		f.Close()
	}

	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := OpenFile(empty, Options{}); !errors.Is(err, ErrSize) {
		t.Fatalf("empty file: %v", err)
	}
	if _, err := OpenFile(dir, Options{}); err == nil {
		t.Fatal("opened a directory")
	}
}

func TestFileReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lun.img")
	w, err := OpenFile(path, Options{Size: 1 << 20, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, w, []byte("keep"), 0)
	w.Close()

	r, err := OpenFile(path, Options{Mode: ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.WriteAt([]byte("lost"), 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("WriteAt = %v, want EROFS", err)
	}
	if _, err := r.WriteAtFUA([]byte("lost"), 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("WriteAtFUA = %v, want EROFS", err)
	}
	if err := r.Unmap(0, 4096); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Unmap = %v, want EROFS", err)
	}
	if err := r.Flush(); err != nil {
		t.Fatalf("Flush on read-only: %v", err)
	}
	if string(mustRead(t, r, 0, 4)) != "keep" {
		t.Fatal("read-only file changed")
	}
	// Readers share; a writer is locked out while they hold it.
	r2, err := OpenFile(path, Options{Mode: ReadOnly})
	if err != nil {
		t.Fatalf("second reader: %v", err)
	}
	r2.Close()
	if _, err := OpenFile(path, Options{}); !errors.Is(err, ErrInUse) {
		t.Fatalf("writer while a reader holds the file: %v", err)
	}
}

func TestFileLock(t *testing.T) {
	f := openTestFile(t, 1<<20, WriteBack)
	_, err := OpenFile(f.Path(), Options{})
	if !errors.Is(err, ErrInUse) || !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatalf("second open = %v, want ErrInUse", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(f.Path())) {
		t.Fatalf("error %q does not name the path", err)
	}
	if _, err := OpenFile(f.Path(), Options{Mode: ReadOnly}); !errors.Is(err, ErrInUse) {
		t.Fatalf("reader while a writer holds the file: %v", err)
	}
	// Another process is refused too (flock is per open file, so this
	// mostly documents the intent; flock(1) is in util-linux).
	if flock, err := exec.LookPath("flock"); err == nil {
		out, err := exec.Command(flock, "-n", "-x", f.Path(), "true").CombinedOutput()
		if err == nil {
			t.Fatalf("flock(1) got the lock held by the store: %s", out)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := OpenFile(f.Path(), Options{})
	if err != nil {
		t.Fatalf("open after Close: %v", err)
	}
	g.Close()
}

func TestFileClosed(t *testing.T) {
	f := openTestFile(t, 1<<20, WriteBack)
	f.Close()
	if _, err := f.ReadAt(make([]byte, 512), 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadAt after Close = %v", err)
	}
	if err := f.Flush(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Flush after Close = %v", err)
	}
	if err := f.Unmap(0, 4096); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Unmap after Close = %v", err)
	}
	if err := f.Close(); err == nil {
		t.Error("second Close succeeded")
	}
}

// TestFileFullDisk fills a 1 MiB tmpfs and checks the write error wraps
// ENOSPC, which the LU turns into SPACE ALLOCATION FAILED.
func TestFileFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a 1 MiB tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })

	// A sparse 8 MiB store on a 1 MiB filesystem: creating it is fine,
	// filling it is not.
	f, err := OpenFile(filepath.Join(dir, "lun.img"), Options{Size: 8 << 20, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := pattern(1, 256<<10)
	var werr error
	for off := int64(0); off < f.Size() && werr == nil; off += int64(len(p)) {
		_, werr = f.WriteAt(p, off)
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("filling a 1 MiB tmpfs: err = %v, want ENOSPC", werr)
	}
	var pe *os.PathError
	if !errors.As(werr, &pe) {
		t.Fatalf("%T is not an *os.PathError", werr)
	}
	// Unmapping frees space, after which writes succeed again.
	if err := f.Unmap(0, f.Size()); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, p, 0)
}

func TestFileBlockDeviceRefused(t *testing.T) {
	if _, err := os.Stat("/dev/loop0"); err != nil {
		t.Skip("no /dev/loop0 to try")
	}
	_, err := OpenFile("/dev/loop0", Options{Mode: ReadOnly})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("OpenBlockDevice")) {
		t.Fatalf("OpenFile on a block device = %v, want a pointer to OpenBlockDevice", err)
	}
}
