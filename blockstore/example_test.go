package blockstore_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hatgt/hatgt/blockstore"
)

// A Crash store forgets what was not flushed, and keeps FUA writes.
func ExampleCrash() {
	c := blockstore.NewCrash(1 << 20)
	c.WriteAt([]byte("flushed"), 0)
	c.Flush()
	c.WriteAt([]byte("lost"), 4096)
	c.WriteAtFUA([]byte("fua"), 8192)

	c.Crash()

	for _, off := range []int64{0, 4096, 8192} {
		b := make([]byte, 7)
		c.ReadAt(b, off)
		fmt.Printf("%d: %q\n", off, b)
	}
	// Output:
	// 0: "flushed"
	// 4096: "\x00\x00\x00\x00\x00\x00\x00"
	// 8192: "fua\x00\x00\x00\x00"
}

// Open a sparse file store, write, flush, and see that a read-only store
// refuses writes with EROFS.
func ExampleOpenFile() {
	dir, _ := os.MkdirTemp("", "blockstore-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "lun0.img")

	s, err := blockstore.OpenFile(path, blockstore.Options{Size: 1 << 30, Create: true, Mode: blockstore.WriteBack})
	if err != nil {
		fmt.Println(err)
		return
	}
	s.WriteAt([]byte("hello"), 0)
	s.Flush()
	s.Close()

	ro, _ := blockstore.OpenFile(path, blockstore.Options{Mode: blockstore.ReadOnly})
	defer ro.Close()
	_, err = ro.WriteAt([]byte("x"), 0)
	fmt.Println(ro.Size(), errors.Is(err, syscall.EROFS))
	// Output:
	// 1073741824 true
}
