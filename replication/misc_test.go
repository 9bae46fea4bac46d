package replication

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := []func(*Config){
		func(c *Config) { c.AckTimeout = 0 },
		func(c *Config) { c.RegionSize = 3000 },
		func(c *Config) { c.RegionSize = 96 << 10 },
		func(c *Config) { c.RegionSize = 2 << 30 },
		func(c *Config) { c.RegionSize = 32 << 20 },
		func(c *Config) { c.ResyncRate = -1 },
		func(c *Config) { c.MaxInFlight = 0 },
		func(c *Config) { c.MaxMessage = 100 },
		func(c *Config) { c.MaxMessage = MaxPayload + 1 },
	}
	for i, f := range bad {
		c := DefaultConfig()
		f(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("case %d: %v, want ErrInvalidConfig", i, err)
		}
		if _, err := NewVolume(c, 1, "a", nil, nil, nil); err == nil {
			t.Errorf("case %d: NewVolume accepted it", i)
		}
	}
}

func TestDirtyMap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.dirty")
	d, full, err := OpenDirtyMap(path, 10<<20+1, 1<<20) // 11 regions
	if err != nil || !full || d.Count() != 11 {
		t.Fatalf("new map: full=%v count=%d err=%v", full, d.Count(), err)
	}
	for r := range int64(11) {
		d.Clear(r)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.MarkDurable(1<<20-1, 2); err != nil { // regions 0 and 1
		t.Fatal(err)
	}
	if gen := d.Mark(0, 4096); gen != 0 {
		t.Fatalf("re-marking a durable bit asks for a persist (gen %d)", gen)
	}
	d.Mark(10<<20, 1) // last, partial region; not yet durable
	d.Mark(-5, 10)    // ignored
	d.Mark(11<<20, 1) // beyond the end: ignored
	if d.Count() != 3 || d.Next(2) != 10 || d.Next(11) != -1 || d.Next(0) != 0 {
		t.Fatalf("count %d next(2) %d", d.Count(), d.Next(2))
	}
	d2, full, err := OpenDirtyMap(path, 10<<20+1, 1<<20)
	if err != nil || full || d2.Count() != 2 || !d2.IsDirty(0) || !d2.IsDirty(1) {
		t.Fatalf("reopened before the last persist: full=%v count=%d err=%v", full, d2.Count(), err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if d3, _, _ := OpenDirtyMap(path, 10<<20+1, 1<<20); d3.Count() != 3 {
		t.Fatalf("after flush: %d", d3.Count())
	}
	// A different geometry or a torn file means a full copy.
	if d4, full, err := OpenDirtyMap(path, 20<<20, 1<<20); err != nil || !full || d4.Count() != 20 {
		t.Fatalf("geometry change: full=%v count=%d err=%v", full, d4.Count(), err)
	}
	b, _ := os.ReadFile(path)
	b[len(b)-1] ^= 1
	os.WriteFile(path, b, 0o600)
	if _, full, _ := OpenDirtyMap(path, 20<<20, 1<<20); !full {
		t.Fatal("corrupt map not treated as all dirty")
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	o := NewDirtyMap(10<<20+1, 1<<20)
	o.Mark(5<<20, 1)
	e := NewDirtyMap(10<<20+1, 1<<20)
	e.Mark(0, 1)
	e.Merge(o)
	if e.Count() != 2 || !e.IsDirty(5) {
		t.Fatalf("merge: %d", e.Count())
	}
}

// The ack timeout runs on the injected clock: a write to a silent mirror
// completes only once the test advances the clock past the timeout.
func TestAckTimeoutOnManualClock(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	clk := NewManualClock(testStart)
	cfg := testConfig()
	cfg.Clock = clk
	v := c.open("a", cfg, nil)
	c.net.Partition("a", "b")
	done := make(chan error, 1)
	go func() {
		_, err := v.WriteAt(pattern(1, 4096), 0)
		done <- err
	}()
	waitUntil(t, func() bool { return clk.Pending() == 1 })
	clk.Advance(cfg.AckTimeout - time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("write finished before its mirror timed out: %v", err)
	default:
	}
	if !c.view().IsInSync("b") {
		t.Fatal("dropped before the timeout")
	}
	clk.Advance(time.Millisecond)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("b") {
		t.Fatal("silent mirror still in sync")
	}
}

// An in-sync mirror that cannot be reached when the owner opens is dropped
// before the first write is acknowledged.
func TestOpenWithUnreachableMirror(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	c.net.Unregister("c")
	v := c.open("a", Config{}, nil)
	if _, err := v.WriteAt(pattern(1, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if c.view().IsInSync("c") {
		t.Fatal("unreachable mirror in sync after an acknowledged write")
	}
	c.identical("a", "b")
}

func TestOpenRequiresOwnership(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v, err := NewVolume(testConfig(), testLUN, "b", c.stores["b"], c.coord, c.net.Transport("b"))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Open(t.Context()); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("open by a non-owner: %v", err)
	}
	if _, err := v.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("write on an unopened volume: %v", err)
	}
}

func TestErrorKind(t *testing.T) {
	v := &Volume{}
	cases := []struct {
		err  error
		want scsi.BackendErrorKind
	}{
		{&StaleEpochError{LUN: 1, Epoch: 1, Newest: 2}, scsi.BackendErrNotReady},
		{fmt.Errorf("x: %w", ErrNotOwner), scsi.BackendErrNotReady},
		{ErrStaleView, scsi.BackendErrNotReady},
		{ErrClosed, scsi.BackendErrNotReady},
		{&os.PathError{Op: "write", Err: syscall.ENOSPC}, scsi.BackendErrNoSpace},
		{&os.PathError{Op: "write", Err: syscall.EROFS}, scsi.BackendErrReadOnly},
		{syscall.EIO, scsi.BackendErrOther},
	}
	for _, tc := range cases {
		if got := v.ErrorKind(tc.err); got != tc.want {
			t.Errorf("ErrorKind(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// A closed volume refuses IO with ErrClosed.
func TestClose(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if err := v.Flush(); !errors.Is(err, ErrClosed) {
		t.Fatalf("flush after close: %v", err)
	}
}

func TestValidateTimings(t *testing.T) {
	c := DefaultConfig()
	if err := c.ValidateTimings(10*time.Second, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, tc := range [][2]time.Duration{{5 * time.Second, 15 * time.Second}, {10 * time.Second, 10 * time.Second}, {2 * time.Second, time.Second}} {
		if err := c.ValidateTimings(tc[0], tc[1]); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%v: %v", tc, err)
		}
	}
}

// The cluster's lease expiry: after Depose nothing is served, not even a
// read (no stale reads after another node may have taken over).
func TestDepose(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b")
	v := c.open("a", Config{}, nil)
	v.Depose(errors.New("lease expired"))
	if _, err := v.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("read after Depose: %v", err)
	}
	if _, err := v.WriteAt(make([]byte, 512), 0); !errors.Is(err, ErrNotOwner) || v.ErrorKind(err) != scsi.BackendErrNotReady {
		t.Fatalf("write after Depose: %v", err)
	}
}

// Deposing or closing cuts the mirror connections; the writes in flight
// fail, and the healthy mirrors are not dropped from the in-sync set.
func TestDeposeDropsNobody(t *testing.T) {
	c := newTestCluster(t, 1<<20, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	c.net.SetDelay("b", 20*time.Millisecond)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			_, err := v.WriteAt(pattern(uint64(i), 4096), int64(i)*4096)
			errs <- err
		}()
	}
	waitUntil(t, func() bool { return c.mirrors["c"].Stats(testLUN).Writes >= 1 })
	v.Depose(errors.New("lease expired"))
	for range 4 {
		<-errs // acknowledged or refused, both fine
	}
	if got := c.view().InSync; len(got) != 3 {
		t.Fatalf("in-sync set %v after Depose, want all three", got)
	}
}
