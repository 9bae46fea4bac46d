package test

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLeaveOwnerHandsOverWithoutOverlap: "hatgt leave" on the owner A of
// a 3-copy LUN while two initiators work through both portals, one on A's
// and one on B's (B is the copy the LUN goes to). Each initiator gives its
// own block new versions and reads the other's block, one qemu-io run
// (login, write, read) at a time. Two nodes serving at once shows as a
// stale read: a read that began after a newer version of the block was
// acknowledged through the other portal, and returns an older one. (The
// runs' wall-clock windows do not tell it by themselves: a write served
// just before the handover and acknowledged just after can overlap a run
// that the next owner serves, so the check is on what reads return.)
// Afterwards every block holds its last acknowledged version (or a later
// one that was sent but not acknowledged), and the remaining copies are
// identical. First, a LUN whose only copy is on A makes the leave fail
// with a message naming it.
func TestLeaveOwnerHandsOverWithoutOverlap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hatgt processes; skipped with -short")
	}
	needTools(t, "qemu-io", "qemu-img")
	const iqn = "iqn.2026-11.io.hatgt:leave"
	c := newTestCluster(t, 3)
	lead := c.leader()
	fs := c.followers()
	a, b := fs[0], fs[1]
	lead.hatgt("target", "create", iqn)
	createReplicatedLUN(lead, iqn, 0, "16M", []*clusterProc{a, b, lead})
	lead.hatgt("lun", "create", iqn, "--lun", "1", "--size", "1M", "--placement", a.id)
	l := waitAllInSync(c, lead, iqn, 0, 60*time.Second)
	if l.Owner != a.id {
		t.Fatalf("LUN 0 owned by %s, want %s (first of its placement)", l.Owner, a.id)
	}
	aURL, bURL := replURL(a, iqn, 0), replURL(b, iqn, 0)
	c.waitFor("the owner serves the LUN", 30*time.Second, servesIO(aURL))

	// LUN 1 has no other copy: the leave is refused and changes nothing.
	out, err := a.tryHatgt("leave")
	if err == nil {
		t.Fatalf("hatgt leave succeeded although LUN 1 has its only copy on %s:\n%s", a.id, out)
	}
	for _, want := range []string{"LUN 1 of " + iqn, "delete", "in sync", "--force"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refused leave does not say %q:\n%s", want, out)
		}
	}
	if !a.running() {
		t.Fatalf("%s stopped after a refused leave", a.id)
	}
	if st := lead.statusJSON(); voters(st) != 3 {
		t.Fatalf("%d voters after a refused leave, want 3", voters(st))
	}
	lead.hatgt("lun", "delete", iqn, "--lun", "1")

	wa := &leaveWorker{via: a.id, url: aURL, own: 0, other: leaveBlock}
	wb := &leaveWorker{via: b.id, url: bURL, own: leaveBlock, other: 0}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range []*leaveWorker{wa, wb} {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(stop) }()
	}
	stopped := false
	stopWorkers := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopWorkers()
	c.waitFor("writes acknowledged through "+a.id, time.Minute, func() (bool, string) {
		n := wa.acked()
		wa.mu.Lock()
		last := wa.lastOut
		wa.mu.Unlock()
		return n >= 5, fmt.Sprintf("%d; the last failed run said: %s", n, last)
	})

	left := time.Now()
	out = a.hatgt("leave")
	t.Logf("hatgt leave on %s (%v): %s", a.id, time.Since(left).Round(time.Millisecond), strings.TrimSpace(out))
	select {
	case <-a.done:
	case <-time.After(time.Minute):
		t.Fatalf("%s still runs a minute after it left", a.id)
	}
	l = waitReplLUN(c, lead, iqn, 0, "the LUN handed over to "+b.id, time.Minute, func(nl *replLUN) (bool, string) {
		return nl.Owner == b.id && !slices.Contains(nl.Placement, a.id), nl.summary()
	})
	before := wb.acked()
	c.waitFor("writes acknowledged through the new owner "+b.id, time.Minute, func() (bool, string) {
		n := wb.acked()
		return n >= before+5, fmt.Sprintf("%d, %d before", n, before)
	})
	stopWorkers()
	t.Logf("through %s: %d writes acknowledged of %d; through %s: %d of %d",
		a.id, wa.acked(), len(wa.records()), b.id, wb.acked(), len(wb.records()))

	// No read returned a version older than one acknowledged through the
	// other portal before the read began.
	stale := 0
	for _, pair := range [][2]*leaveWorker{{wa, wb}, {wb, wa}} {
		r, w := pair[0], pair[1]
		for _, rd := range r.records() {
			if rd.read < 0 {
				continue
			}
			v, at := w.ackedBefore(rd.start)
			if rd.read < int(v) {
				stale++
				t.Errorf("a read through %s that began at %v returned version %d of %s's block, but version %d was acknowledged through %s at %v: two nodes served the LUN at once",
					r.via, rd.start.Sub(left).Round(time.Millisecond), rd.read, w.via, v, w.via, at.Sub(left).Round(time.Millisecond))
			}
		}
	}
	if stale > 0 {
		t.Fatalf("%d stale reads", stale)
	}

	// Every acknowledged write is on the LUN.
	l = waitAllInSync(c, lead, iqn, 0, 2*time.Minute)
	data := readLUN(t, replURL(c.node(l.Owner), iqn, 0), "the owner "+l.Owner)
	for _, w := range []*leaveWorker{wa, wb} {
		acked, tried := w.last()
		got := data[w.own]
		if !slices.Equal(data[w.own:w.own+512], slices.Repeat([]byte{got}, 512)) || got < acked || got > tried {
			t.Errorf("the block written through %s holds version %d: last acknowledged %d, last sent %d", w.via, got, acked, tried)
		}
	}
	checkCopiesIdentical(t, c, iqn, l)
}

// leaveBlock is the offset of the second initiator's block.
const leaveBlock = 4096

// leaveRun is one qemu-io run of a leaveWorker.
type leaveRun struct {
	start, end time.Time
	version    byte // written to the worker's own block
	wrote      bool // acknowledged
	read       int  // version read from the other block; -1: no read
}

// leaveWorker writes new versions (1..250) of its own 512-byte block and
// reads the other worker's, one qemu-io run at a time, through url.
type leaveWorker struct {
	via        string
	url        string
	own, other int64

	mu      sync.Mutex
	runs    []leaveRun
	next    byte
	lastOut string // qemu-io's output of the last run that wrote nothing
}

var readLineRe = regexp.MustCompile(`(?m)^[0-9a-f]{8}:  ([0-9a-f]{2}) `)

func (w *leaveWorker) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		w.mu.Lock()
		if w.next == 250 {
			w.mu.Unlock()
			return
		}
		v := w.next + 1
		w.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r := leaveRun{start: time.Now(), version: v, read: -1}
		out, _ := exec.CommandContext(ctx, "qemu-io", "-f", "raw",
			"-c", fmt.Sprintf("write -P 0x%02x %d 512", v, w.own),
			"-c", fmt.Sprintf("read -v %d 512", w.other), w.url).CombinedOutput()
		r.end = time.Now()
		cancel()
		s := string(out)
		r.wrote = strings.Contains(s, fmt.Sprintf("wrote 512/512 bytes at offset %d\n", w.own))
		if m := readLineRe.FindStringSubmatch(s); m != nil && strings.Contains(s, fmt.Sprintf("read 512/512 bytes at offset %d\n", w.other)) {
			n, _ := strconv.ParseUint(m[1], 16, 8)
			r.read = int(n)
		}
		attempted := r.wrote || strings.Contains(s, "write failed") || ctx.Err() != nil
		w.mu.Lock()
		if attempted {
			w.next = v // a write that failed may still have reached a copy
		}
		w.runs = append(w.runs, r)
		if !r.wrote {
			w.lastOut = s
		}
		w.mu.Unlock()
		if !r.wrote {
			time.Sleep(20 * time.Millisecond) // a standby path, or the handover
		}
	}
}

func (w *leaveWorker) records() []leaveRun {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.runs)
}

func (w *leaveWorker) acked() int {
	n := 0
	for _, r := range w.records() {
		if r.wrote {
			n++
		}
	}
	return n
}

// ackedBefore returns the newest version acknowledged before t, and when.
func (w *leaveWorker) ackedBefore(t time.Time) (byte, time.Time) {
	var v byte
	var at time.Time
	for _, r := range w.records() {
		if r.wrote && r.end.Before(t) && r.version > v {
			v, at = r.version, r.end
		}
	}
	return v, at
}

// last returns the last acknowledged and the last sent version.
func (w *leaveWorker) last() (acked, tried byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.runs {
		if r.wrote {
			acked = max(acked, r.version)
		}
	}
	return acked, w.next
}
