package blockstore

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// flat is the obvious model of a store: one byte slice.
type flat []byte

func (f flat) write(p []byte, off int64) { copy(f[off:], p) }
func (f flat) unmap(off, n int64)        { clear(f[off : off+n]) }

// randomRange picks an in-bounds range, often unaligned, sometimes
// crossing 4 KiB chunks or a 1 MiB bounce buffer.
func randomRange(r *rand.Rand, size int64) (off, n int64) {
	switch r.IntN(4) {
	case 0: // sector aligned
		n = int64(1+r.IntN(16)) * 512
		off = r.Int64N((size-n)/512+1) * 512
	case 1: // large, unaligned
		n = 1 + r.Int64N(min(3<<20, size))
		off = r.Int64N(size - n + 1)
	default: // small, unaligned
		n = 1 + r.Int64N(9000)
		off = r.Int64N(size - n + 1)
	}
	return off, n
}

// testAgainstModel applies the same random writes, FUA writes and
// unmaps to s and to a flat model and compares reads after each step.
func testAgainstModel(t *testing.T, s store, seed uint64, steps int) {
	size := s.Size()
	model := make(flat, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for step := range steps {
		off, n := randomRange(r, size)
		switch op := r.IntN(10); {
		case op < 5:
			p := pattern(uint64(step)+seed<<32, int(n))
			mustWrite(t, s, p, off)
			model.write(p, off)
		case op < 6:
			p := pattern(uint64(step)+seed<<32, int(n))
			if _, err := s.WriteAtFUA(p, off); err != nil {
				t.Fatalf("step %d: WriteAtFUA: %v", step, err)
			}
			model.write(p, off)
		case op < 8:
			if err := s.Unmap(off, n); err != nil {
				t.Fatalf("step %d: Unmap(%d, %d): %v", step, off, n, err)
			}
			model.unmap(off, n)
		default:
			if err := s.Flush(); err != nil {
				t.Fatalf("step %d: Flush: %v", step, err)
			}
		}
		off, n = randomRange(r, size)
		if got := mustRead(t, s, off, int(n)); !bytes.Equal(got, model[off:off+n]) {
			t.Fatalf("step %d: read of %d bytes at %d differs from the model", step, n, off)
		}
	}
	if got := mustRead(t, s, 0, int(size)); !bytes.Equal(got, model) {
		t.Fatal("final image differs from the model")
	}
}

func TestModelMemory(t *testing.T) { testAgainstModel(t, NewMemory(8<<20+512), 1, 150) }
func TestModelCrash(t *testing.T)  { testAgainstModel(t, NewCrash(8<<20+512), 2, 150) }

func TestModelFile(t *testing.T) {
	testAgainstModel(t, openTestFile(t, 8<<20, WriteBack), 3, 200)
}

func TestModelBounce4K(t *testing.T) {
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
	testAgainstModel(t, d, 4, 200)
}

func TestModelLoopDevice(t *testing.T) {
	dev, _ := loopDevice(t, 8<<20, 4096)
	testAgainstModel(t, openTestDevice(t, dev, Options{}), 5, 200)
}

// TestCrashAgainstModel drives Crash with random writes, FUA writes,
// unmaps, flushes and crashes, against a model that keeps a current and
// a durable image byte for byte.
func TestCrashAgainstModel(t *testing.T) {
	const size = 1<<20 + 512
	c := NewCrash(size)
	cur, durable := make(flat, size), make(flat, size)
	r := rand.New(rand.NewPCG(6, 1))
	for step := range 500 {
		off, n := randomRange(r, size)
		n = min(n, 64<<10)
		op := r.IntN(20)
		switch {
		case op < 8:
			p := pattern(uint64(step), int(n))
			mustWrite(t, c, p, off)
			cur.write(p, off)
		case op < 11:
			p := pattern(uint64(step), int(n))
			if _, err := c.WriteAtFUA(p, off); err != nil {
				t.Fatal(err)
			}
			cur.write(p, off)
			durable.write(p, off)
		case op < 14:
			if err := c.Unmap(off, n); err != nil {
				t.Fatal(err)
			}
			cur.unmap(off, n)
		case op < 17:
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			copy(durable, cur)
		default:
			c.Crash()
			copy(cur, durable)
		}
		if c.Unflushed() != !bytes.Equal(cur, durable) {
			t.Fatalf("step %d: Unflushed = %v with images equal = %v", step, c.Unflushed(), bytes.Equal(cur, durable))
		}
		if step%10 == 0 || op >= 14 {
			if got := mustRead(t, c, 0, size); !bytes.Equal(got, cur) {
				t.Fatalf("step %d: image differs from the model", step)
			}
		}
	}
}

// TestImports keeps blockstore below scsi/: standard library and
// golang.org/x/sys only.
func TestImports(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg != "github.com/hatgt/hatgt/blockstore" && !strings.HasPrefix(pkg, "golang.org/x/sys/") {
			t.Errorf("blockstore depends on %s", pkg)
		}
	}
}
