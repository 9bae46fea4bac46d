package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/hatgt/hatgt/agent"
	"github.com/hatgt/hatgt/cluster"
)

// progressEvery is how often a progress line is printed when the output
// is not a terminal (a log file, a pipe): often enough to see it move,
// seldom enough not to flood the file.
const progressEvery = 5 * time.Second

// progressPrinter shows how far a long command got. On a terminal it keeps
// one line up to date in place; otherwise it prints a line every
// progressEvery (and the first at once).
type progressPrinter struct {
	w     io.Writer
	tty   bool
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	last  time.Time
	shown bool // a line is on the terminal (tty) or was printed
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	return &progressPrinter{w: w, tty: isTerminal(w), every: progressEvery, now: time.Now}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// update shows line.
func (p *progressPrinter) update(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
		p.shown = true
		return
	}
	if now := p.now(); !p.shown || now.Sub(p.last) >= p.every {
		fmt.Fprintln(p.w, line)
		p.last, p.shown = now, true
	}
}

// done takes the terminal line away before the result is printed.
func (p *progressPrinter) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	p.shown = false
}

// verifyProgressLine is one progress line of "hatgt lun verify".
func verifyProgressLine(p cluster.VerifyProgress, regionSize int64) string {
	rate, eta := "rate -", "ETA -"
	if p.RateBps > 0 {
		rate = cluster.FormatRate(p.RateBps)
		eta = "ETA " + (time.Duration(p.ETASeconds * float64(time.Second))).Round(time.Second).String()
	}
	differ := ""
	if p.Divergent > 0 {
		differ = fmt.Sprintf(", %d regions differ", p.Divergent)
	}
	return fmt.Sprintf("lun verify: %3.0f%%  copy %d of %d (%s)  %s of %s compared  %s  %s%s",
		p.Percent(), p.Copy, p.Copies, p.Node, agent.FormatBytes(p.BytesCompared), agent.FormatBytes(p.RegionsTotal*regionSize), rate, eta, differ)
}
