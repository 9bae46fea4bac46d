package blockstore

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// The benchmarks write and read a 256 MiB sparse file in the test's temp
// directory (the disk under go test's TMPDIR). Offsets advance so writes
// do not all hit one block; 4 KiB IO uses aligned buffers.
const benchFileSize = 256 << 20

func benchFile(b *testing.B, mode Mode, wt wtMethod) *File {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.img")
	f, err := openFile(path, Options{Size: benchFileSize, Create: true, Mode: mode}, wt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func benchWrites(b *testing.B, s store, bs int) {
	p := alignedBuf(bs, 4096)
	copy(p, pattern(1, bs))
	b.SetBytes(int64(bs))
	var next atomic.Int64
	b.ResetTimer()
	for b.Loop() {
		off := (next.Add(1) * int64(bs)) % (s.Size() - int64(bs))
		off &^= 4095
		if _, err := s.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
	}
}

func benchReads(b *testing.B, s store, bs int) {
	p := alignedBuf(bs, 4096)
	// Fill the first 64 MiB so reads hit data, not holes.
	fill := alignedBuf(1<<20, 4096)
	for off := int64(0); off < 64<<20; off += 1 << 20 {
		if _, err := s.WriteAt(fill, off); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(bs))
	var i int64
	b.ResetTimer()
	for b.Loop() {
		off := (i * int64(bs)) % (64<<20 - int64(bs))
		i++
		if _, err := s.ReadAt(p, off&^4095); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFile(b *testing.B) {
	for _, mode := range []Mode{WriteBack, WriteThrough} {
		for _, bs := range []int{4 << 10, 1 << 20} {
			name := fmt.Sprintf("%s/%dKiB", mode, bs>>10)
			b.Run("Write/"+name, func(b *testing.B) { benchWrites(b, benchFile(b, mode, wtDefault), bs) })
			b.Run("Read/"+name, func(b *testing.B) { benchReads(b, benchFile(b, mode, wtDefault), bs) })
		}
	}
}

// BenchmarkWriteThroughMethod compares the ways to make each write
// durable: O_DSYNC on the file, or pwrite followed by fdatasync;
// wtDefault records the winner.
func BenchmarkWriteThroughMethod(b *testing.B) {
	methods := []struct {
		name string
		wt   wtMethod
	}{{"O_DSYNC", wtODSync}, {"fdatasync", wtFdatasync}}
	for _, bs := range []int{4 << 10, 1 << 20} {
		for _, m := range methods {
			b.Run(fmt.Sprintf("%s/%dKiB", m.name, bs>>10), func(b *testing.B) {
				benchWrites(b, benchFile(b, WriteThrough, m.wt), bs)
			})
			b.Run(fmt.Sprintf("parallel-%s/%dKiB", m.name, bs>>10), func(b *testing.B) {
				benchParallelWrites(b, benchFile(b, WriteThrough, m.wt), bs)
			})
		}
	}
}

// benchParallelWrites writes from 8 goroutines, as a queue depth of 8.
func benchParallelWrites(b *testing.B, s store, bs int) {
	b.SetBytes(int64(bs))
	b.SetParallelism(4) // 4 x GOMAXPROCS(2) = 8 writers
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := alignedBuf(bs, 4096)
		for pb.Next() {
			off := (next.Add(1) * int64(bs)) % (s.Size() - int64(bs))
			if _, err := s.WriteAt(p, off&^4095); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkMemory(b *testing.B) {
	for _, bs := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("Write/%dKiB", bs>>10), func(b *testing.B) { benchWrites(b, NewMemory(benchFileSize), bs) })
		b.Run(fmt.Sprintf("Read/%dKiB", bs>>10), func(b *testing.B) { benchReads(b, NewMemory(benchFileSize), bs) })
	}
}

// BenchmarkBlockDevice runs the same IO over a loop device (O_DIRECT, so
// reads and write-back writes reach the backing file's page cache through
// the loop driver). Skipped where loop devices cannot be set up.
func BenchmarkBlockDevice(b *testing.B) {
	for _, mode := range []Mode{WriteBack, WriteThrough} {
		for _, bs := range []int{4 << 10, 1 << 20} {
			name := fmt.Sprintf("%s/%dKiB", mode, bs>>10)
			b.Run("Write/"+name, func(b *testing.B) {
				dev, _ := loopDevice(b, benchFileSize, 512)
				benchWrites(b, openTestDevice(b, dev, Options{Mode: mode}), bs)
			})
			b.Run("Read/"+name, func(b *testing.B) {
				dev, _ := loopDevice(b, benchFileSize, 512)
				benchReads(b, openTestDevice(b, dev, Options{Mode: mode}), bs)
			})
		}
	}
}
