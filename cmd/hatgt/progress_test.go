package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// TestProgressPrinterOffTerminal: into a file or a pipe, progress is a
// line at once and then one every progressEvery, never a carriage return.
func TestProgressPrinterOffTerminal(t *testing.T) {
	var b bytes.Buffer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newProgressPrinter(&b)
	p.now = func() time.Time { return now }
	for i := range 12 { // one update a second for 12 s
		p.update(verifyProgressLine(cluster.VerifyProgress{Node: "n2", Copy: 1, Copies: 1, RegionsDone: int64(i), RegionsTotal: 12,
			BytesCompared: int64(i) << 20, RateBps: 1 << 20, ETASeconds: float64(12 - i)}, 1<<20))
		now = now.Add(time.Second)
	}
	p.done()
	out := b.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 || strings.Contains(out, "\r") {
		t.Fatalf("want 3 lines (0 s, 5 s, 10 s), got:\n%q", out)
	}
	for i, want := range []string{"lun verify:   0%  copy 1 of 1 (n2)  0 B of 12 MiB compared", "42%", "83%  copy 1 of 1 (n2)  10 MiB of 12 MiB compared  1.0 MiB/s  ETA 2s"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %q, want it to hold %q", i, lines[i], want)
		}
	}
}

// TestProgressPrinterOnTerminal: on a terminal one line is rewritten in
// place and cleared at the end.
func TestProgressPrinterOnTerminal(t *testing.T) {
	var b bytes.Buffer
	p := newProgressPrinter(&b)
	p.tty = true
	p.update("one")
	p.update("two")
	p.done()
	if got := b.String(); got != "\r\x1b[Kone\r\x1b[Ktwo\r\x1b[K" {
		t.Errorf("terminal output %q", got)
	}
}
