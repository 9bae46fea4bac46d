package blockstore

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
)

// store is what every backend offers (the scsi volume interface plus its
// optional capabilities).
type store interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	WriteAtFUA(p []byte, off int64) (int, error)
	Flush() error
	Size() int64
	Unmap(off, length int64) error
}

type extentStore interface {
	store
	MappedExtent(off int64) (bool, int64, error)
}

var (
	_ extentStore = (*Memory)(nil)
	_ extentStore = (*Crash)(nil)
	_ extentStore = (*File)(nil)
	_ store       = (*BlockDevice)(nil)
)

// pattern returns n pseudo-random bytes, the same for the same seed.
func pattern(seed uint64, n int) []byte {
	var key [32]byte
	for i := range 4 {
		key[i*8] = byte(seed >> (8 * i))
		key[i*8+4] = byte(seed >> (8 * (i + 4)))
	}
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

func mustRead(t *testing.T, s store, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	got, err := s.ReadAt(b, off)
	if err != nil || got != n {
		t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, got, err)
	}
	return b
}

func mustWrite(t *testing.T, s store, p []byte, off int64) {
	t.Helper()
	if n, err := s.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", len(p), off, n, err)
	}
}

// testStoreContract runs the checks every backend must pass. size is the
// store's size (a multiple of 4096, at least 1 MiB); blk the smallest
// offset alignment the store accepts fast (512 or the sector size).
func testStoreContract(t *testing.T, s store, size int64) {
	t.Run("Size", func(t *testing.T) {
		if s.Size() != size {
			t.Fatalf("Size = %d, want %d", s.Size(), size)
		}
	})
	t.Run("RoundTrip", func(t *testing.T) {
		for i, c := range []struct {
			off int64
			n   int
		}{{0, 4096}, {8192, 512}, {size - 4096, 4096}, {65536, 1 << 20 / 2}, {1000, 3000}, {4095, 2}} {
			p := pattern(uint64(i+1), c.n)
			mustWrite(t, s, p, c.off)
			if got := mustRead(t, s, c.off, c.n); !bytes.Equal(got, p) {
				t.Fatalf("case %d: read back differs from write at %d", i, c.off)
			}
		}
		// FUA writes read back the same way.
		p := pattern(99, 4096)
		if n, err := s.WriteAtFUA(p, 12288); err != nil || n != len(p) {
			t.Fatalf("WriteAtFUA = %d, %v", n, err)
		}
		if !bytes.Equal(mustRead(t, s, 12288, 4096), p) {
			t.Fatal("FUA write did not read back")
		}
		if err := s.Flush(); err != nil {
			t.Fatalf("Flush: %v", err)
		}
	})
	t.Run("UnalignedBuffer", func(t *testing.T) {
		// A slice starting at an odd address, as a caller may hand in.
		raw := make([]byte, 8192+1)
		p := raw[1:]
		copy(p, pattern(7, len(p)))
		mustWrite(t, s, p, 16384)
		out := make([]byte, 8192+3)
		q := out[3:]
		if n, err := s.ReadAt(q, 16384); err != nil || n != len(q) {
			t.Fatalf("ReadAt = %d, %v", n, err)
		}
		if !bytes.Equal(p, q) {
			t.Fatal("unaligned-buffer round trip differs")
		}
	})
	t.Run("ReadPastEnd", func(t *testing.T) {
		b := make([]byte, 8192)
		n, err := s.ReadAt(b, size-4096)
		if n != 4096 || err != io.EOF {
			t.Fatalf("ReadAt across end = %d, %v; want 4096, io.EOF", n, err)
		}
		n, err = s.ReadAt(b, size)
		if n != 0 || err != io.EOF {
			t.Fatalf("ReadAt at end = %d, %v; want 0, io.EOF", n, err)
		}
		if _, err := s.ReadAt(b, -1); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("ReadAt(-1) err = %v, want ErrOutOfRange", err)
		}
	})
	t.Run("WritePastEnd", func(t *testing.T) {
		before := mustRead(t, s, size-4096, 4096)
		n, err := s.WriteAt(make([]byte, 8192), size-4096)
		if n != 0 || !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("WriteAt across end = %d, %v; want 0, ErrOutOfRange", n, err)
		}
		if !bytes.Equal(mustRead(t, s, size-4096, 4096), before) {
			t.Fatal("a refused write changed data")
		}
		if _, err := s.WriteAt(make([]byte, 512), -512); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("WriteAt(-512) err = %v, want ErrOutOfRange", err)
		}
		if err := s.Unmap(size-4096, 8192); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("Unmap across end err = %v, want ErrOutOfRange", err)
		}
	})
	t.Run("UnmapReadsZeros", func(t *testing.T) {
		const off, n = 256 << 10, 256 << 10
		mustWrite(t, s, pattern(11, n), off)
		// Unmap the middle, leaving 512 written bytes each side, and a
		// range that starts and ends inside sectors.
		if err := s.Unmap(off+512, n-1024); err != nil {
			t.Fatalf("Unmap: %v", err)
		}
		got := mustRead(t, s, off, n)
		want := pattern(11, n)
		clear(want[512 : n-512])
		if !bytes.Equal(got, want) {
			t.Fatal("unmapped range does not read back as zeros, or neighbours changed")
		}
		if err := s.Unmap(off+100, 50); err != nil {
			t.Fatalf("Unmap inside a sector: %v", err)
		}
		if got := mustRead(t, s, off, 512); !bytes.Equal(got[100:150], make([]byte, 50)) || !bytes.Equal(got[:100], want[:100]) || !bytes.Equal(got[150:], want[150:512]) {
			t.Fatal("sub-sector unmap did not zero exactly its bytes")
		}
		if err := s.Unmap(off, 0); err != nil {
			t.Fatalf("empty Unmap: %v", err)
		}
	})
	t.Run("ConcurrentWriters", func(t *testing.T) {
		// Writers hammer interleaved 512-byte pieces of the same 4 KiB
		// sectors: none may lose another's bytes (read-modify-write on
		// 4K-sector devices must serialise).
		const base, pieces, rounds = 512 << 10, 16, 8
		var wg sync.WaitGroup
		for w := range pieces {
			wg.Go(func() {
				for r := range rounds {
					p := bytes.Repeat([]byte{byte(w*rounds + r + 1)}, 512)
					if _, err := s.WriteAt(p, base+int64(w)*512); err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
				}
			})
		}
		wg.Wait()
		got := mustRead(t, s, base, pieces*512)
		for w := range pieces {
			want := bytes.Repeat([]byte{byte(w*rounds + rounds)}, 512)
			if !bytes.Equal(got[w*512:(w+1)*512], want) {
				t.Fatalf("piece %d lost its last write", w)
			}
		}
	})
}

// testExtents checks MappedExtent on a store whose unmapped ranges are
// holes at 4 KiB granularity (files on ext4/tmpfs, the memory stores).
func testExtents(t *testing.T, s extentStore) {
	size := s.Size()
	if err := s.Unmap(0, size); err != nil {
		t.Fatalf("Unmap all: %v", err)
	}
	mapped, n, err := s.MappedExtent(0)
	if err != nil || mapped || n != size {
		t.Fatalf("empty store: MappedExtent(0) = %v, %d, %v; want hole of %d", mapped, n, err, size)
	}
	mustWrite(t, s, pattern(3, 8192), 64<<10)
	mustWrite(t, s, pattern(4, 4096), size-4096)
	for _, c := range []struct {
		off    int64
		mapped bool
		n      int64
	}{
		{0, false, 64 << 10},
		{4096, false, 60 << 10},
		{64 << 10, true, 8192},
		{64<<10 + 4096, true, 4096},
		{72 << 10, false, size - 4096 - 72<<10},
		{size - 4096, true, 4096},
		{size - 1, true, 1},
	} {
		mapped, n, err := s.MappedExtent(c.off)
		if err != nil || mapped != c.mapped || n != c.n {
			t.Errorf("MappedExtent(%d) = %v, %d, %v; want %v, %d", c.off, mapped, n, err, c.mapped, c.n)
		}
	}
	if err := s.Unmap(64<<10, 4096); err != nil {
		t.Fatal(err)
	}
	if mapped, n, err := s.MappedExtent(64 << 10); err != nil || mapped || n != 4096 {
		t.Errorf("after punching: MappedExtent = %v, %d, %v; want hole of 4096", mapped, n, err)
	}
	if _, _, err := s.MappedExtent(size); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("MappedExtent(size) err = %v, want ErrOutOfRange", err)
	}
	if _, _, err := s.MappedExtent(-1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("MappedExtent(-1) err = %v, want ErrOutOfRange", err)
	}
}

func TestMemoryContract(t *testing.T) {
	const size = 4 << 20
	testStoreContract(t, NewMemory(size), size)
	t.Run("Extents", func(t *testing.T) { testExtents(t, NewMemory(size)) })
}

func TestMemoryReadOnly(t *testing.T) {
	m := NewMemory(1 << 20)
	mustWrite(t, m, []byte("keep"), 0)
	m.SetReadOnly(true)
	if _, err := m.WriteAt([]byte("lost"), 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("WriteAt on read-only = %v, want EROFS", err)
	}
	if err := m.Unmap(0, 4096); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Unmap on read-only = %v, want EROFS", err)
	}
	if string(mustRead(t, m, 0, 4)) != "keep" {
		t.Fatal("read-only store changed")
	}
}

func TestMemoryOddSize(t *testing.T) {
	// A size that is not a multiple of the 4 KiB grain: unmapping to the
	// end must free the short last chunk.
	m := NewMemory(4096 + 512)
	mustWrite(t, m, pattern(1, 4608), 0)
	if err := m.Unmap(4096, 512); err != nil {
		t.Fatal(err)
	}
	if mapped, n, err := m.MappedExtent(4096); err != nil || mapped || n != 512 {
		t.Fatalf("MappedExtent(4096) = %v, %d, %v; want hole of 512", mapped, n, err)
	}
	if m.MappedBytes() != 4096 {
		t.Fatalf("MappedBytes = %d, want 4096", m.MappedBytes())
	}
}

func TestCrashContract(t *testing.T) {
	const size = 4 << 20
	testStoreContract(t, NewCrash(size), size)
	t.Run("Extents", func(t *testing.T) { testExtents(t, NewCrash(size)) })
}

func TestCrashLosesExactlyUnflushed(t *testing.T) {
	c := NewCrash(1 << 20)
	a, b, fua, late := pattern(1, 4096), pattern(2, 4096), pattern(3, 512), pattern(4, 1024)

	mustWrite(t, c, a, 0)
	mustWrite(t, c, b, 8192)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	// After the flush: overwrite part of a, unmap b, write new data, and
	// FUA-write into the middle of a chunk that also has unflushed data.
	mustWrite(t, c, late, 0)
	if err := c.Unmap(8192, 4096); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, c, pattern(5, 4096), 65536)
	mustWrite(t, c, late, 20480)
	if _, err := c.WriteAtFUA(fua, 20480+2048); err != nil {
		t.Fatal(err)
	}
	if !c.Unflushed() {
		t.Fatal("Unflushed = false with unflushed writes")
	}

	c.Crash()

	if got := mustRead(t, c, 0, 4096); !bytes.Equal(got, a) {
		t.Error("flushed write a lost or unflushed overwrite survived")
	}
	if got := mustRead(t, c, 8192, 4096); !bytes.Equal(got, b) {
		t.Error("flushed write b lost: the unflushed unmap survived the crash")
	}
	if got := mustRead(t, c, 65536, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Error("unflushed write survived the crash")
	}
	want := make([]byte, 4096)
	copy(want[2048:], fua)
	if got := mustRead(t, c, 20480, 4096); !bytes.Equal(got, want) {
		t.Error("FUA write lost, or the unflushed write in its chunk survived")
	}
	if mapped, _, _ := c.MappedExtent(65536); mapped {
		t.Error("chunk of a lost write still mapped")
	}
	if c.Unflushed() {
		t.Error("Unflushed = true right after Crash")
	}

	// A flush then a crash loses nothing.
	mustWrite(t, c, late, 65536)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.Crash()
	if got := mustRead(t, c, 65536, 1024); !bytes.Equal(got, late) {
		t.Error("flushed write lost by Crash")
	}
	if st := c.Stats(); st.Crashes != 2 || st.Flushes != 2 || st.FUAWrites != 1 || st.Unmaps != 1 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestParseMode(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Mode
	}{{"wb", WriteBack}, {"WT", WriteThrough}, {" ro ", ReadOnly}, {"writethrough", WriteThrough}} {
		got, err := ParseMode(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if back, _ := ParseMode(got.String()); back != got {
			t.Errorf("%v does not round-trip through String", got)
		}
	}
	for _, bad := range []string{"", "rw", "wbx"} {
		if _, err := ParseMode(bad); err == nil {
			t.Errorf("ParseMode(%q) accepted", bad)
		}
	}
	if s := Mode(7).String(); s != "Mode(7)" {
		t.Errorf("Mode(7).String() = %q", s)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"zero", Options{}, true},
		{"create", Options{Size: 1 << 20, Create: true}, true},
		{"negative size", Options{Size: -1}, false},
		{"bad mode", Options{Mode: 9}, false},
		{"create without size", Options{Create: true}, false},
		{"grow without size", Options{Grow: true}, false},
		{"read-only create", Options{Mode: ReadOnly, Size: 1 << 20, Create: true}, false},
		{"read-only grow", Options{Mode: ReadOnly, Size: 1 << 20, Grow: true}, false},
	} {
		err := c.o.Validate()
		if (err == nil) != c.ok {
			t.Errorf("%s: Validate = %v", c.name, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: %v does not wrap ErrInvalidOptions", c.name, err)
		}
	}
}

func TestCrashFault(t *testing.T) {
	c := NewCrash(1 << 20)
	full := &os.PathError{Op: "write", Path: "crash", Err: syscall.ENOSPC}
	c.SetFault(func(op string, off, n int64) error {
		switch {
		case op == "write" && off >= 512<<10:
			return full
		case op == "flush":
			return syscall.EIO
		}
		return nil
	})
	mustWrite(t, c, []byte("low"), 0)
	if n, err := c.WriteAt([]byte("high"), 512<<10); n != 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("faulted write = %d, %v; want ENOSPC", n, err)
	}
	if got := mustRead(t, c, 512<<10, 4); !bytes.Equal(got, make([]byte, 4)) {
		t.Fatal("a faulted write changed the store")
	}
	if err := c.Flush(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("faulted flush = %v, want EIO", err)
	}
	// A failed flush made nothing durable.
	c.Crash()
	if got := mustRead(t, c, 0, 3); !bytes.Equal(got, make([]byte, 3)) {
		t.Fatal("write survived a crash after a failed flush")
	}
	c.SetFault(nil)
	mustWrite(t, c, []byte("high"), 512<<10)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}
