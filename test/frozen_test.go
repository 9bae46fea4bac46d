package test

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestOwnerFrozenPastLeaseServesNothingQueued: an owner stopped with
// SIGSTOP (a paused VM, a stall) past its lease has a read and a write
// queued on an open session; the LUN fails over, the new owner
// acknowledges a newer write of the same block, then the old owner
// resumes and finds the queued commands. The read must not return the
// data from before the failover, the write must not be acknowledged, and
// the block must hold the new owner's write.
func TestOwnerFrozenPastLeaseServesNothingQueued(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hatgt processes; skipped with -short")
	}
	needTools(t, "qemu-img", "qemu-io")
	const iqn = "iqn.2026-11.io.hatgt:frozen"
	c := newTestCluster(t, 3)
	lead, copies, l := replOnFollowers(c, iqn, "16M")
	owner, standby := copies[0], copies[1]
	url := replURL(owner, iqn, 0)
	c.waitFor("the owner serves the LUN", 30*time.Second, servesIO(url))
	if out, err := tool("qemu-io", "-f", "raw", "-c", "write -P 0xa1 0 4k", "-c", "flush", url); err != nil || qemuIOFailed(out) {
		t.Fatalf("first write: %v\n%s", err, out)
	}

	// A session to the owner, logged in and working, before the freeze.
	q := startQemuIO(t, url)
	if out := q.run("read -P 0xa1 0 4k"); !strings.Contains(out, "read 4096/4096 bytes at offset 0") {
		t.Fatalf("read through the open session before the freeze: %s", out)
	}
	before := q.mark()
	owner.signal(syscall.SIGSTOP)
	frozen := true
	defer func() {
		if frozen {
			owner.signal(syscall.SIGCONT)
		}
	}()
	// Queued on the session while the owner sleeps: they reach its
	// socket and wait there.
	q.send("aio_read -P 0xa1 0 4k")
	q.send("aio_write -P 0xc3 0 4k")

	l = waitReplLUN(c, lead, iqn, 0, "the LUN moved to the standby copy", 60*time.Second, func(nl *replLUN) (bool, string) {
		return nl.Owner == standby.id && nl.Epoch > l.Epoch, nl.summary()
	})
	newURL := replURL(standby, iqn, 0)
	c.waitFor("the new owner serves the LUN", 60*time.Second, servesIO(newURL))
	if out, err := tool("qemu-io", "-f", "raw", "-c", "write -P 0xb2 0 4k", "-c", "flush", newURL); err != nil || qemuIOFailed(out) {
		t.Fatalf("write through the new owner: %v\n%s", err, out)
	}

	owner.signal(syscall.SIGCONT)
	frozen = false
	// aio_flush waits for both queued commands; qemu-io reports each.
	q.run("aio_flush")
	out := q.close(before)
	t.Logf("qemu-io on the old owner's session after the resume:\n%s", out)
	if strings.Contains(out, "read 4096/4096 bytes at offset 0") {
		t.Errorf("the old owner served the queued read with the data from before the failover (0xa1) after the new owner acknowledged 0xb2")
	}
	if strings.Contains(out, "wrote 4096/4096 bytes at offset 0") {
		t.Errorf("the old owner acknowledged the queued write after its lease ended")
	}
	// Whatever the old owner did, the block holds the acknowledged write.
	c.waitFor("the new owner serves the LUN", 60*time.Second, servesIO(newURL))
	if out, err := tool("qemu-io", "-f", "raw", "-c", "read -P 0xb2 0 4k", newURL); err != nil || qemuIOFailed(out) || !strings.Contains(out, "read 4096/4096") {
		t.Errorf("block 0 after the resume does not hold the new owner's acknowledged write 0xb2: %v\n%s", err, out)
	}
	l = waitAllInSync(c, lead, iqn, 0, 90*time.Second)
	checkCopiesIdentical(t, c, iqn, l)
}

// qemuIO is an interactive qemu-io: one command at a time goes to its
// standard input (it drops lines that arrive together), each after the
// prompt that says the previous one was taken; its output is collected.
type qemuIO struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	mu   sync.Mutex
	cond *sync.Cond
	out  strings.Builder
	eof  bool
}

const qemuIOPrompt = "qemu-io> "

func startQemuIO(t *testing.T, url string) *qemuIO {
	t.Helper()
	q := &qemuIO{t: t}
	q.cond = sync.NewCond(&q.mu)
	// stdbuf: qemu-io's stdout is a pipe, which libc would buffer.
	q.cmd = exec.Command("stdbuf", "-o0", "qemu-io", "-f", "raw", url)
	var err error
	if q.in, err = q.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := q.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	q.cmd.Stderr = q.cmd.Stdout
	if err := q.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		q.cmd.Process.Kill()
		q.cmd.Wait()
	})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := stdout.Read(buf)
			q.mu.Lock()
			q.out.Write(buf[:n])
			if err != nil {
				q.eof = true
			}
			q.cond.Broadcast()
			q.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	q.waitPrompts(1, "the login")
	return q
}

// waitPrompts waits until qemu-io printed n prompts in all.
func (q *qemuIO) waitPrompts(n int, what string) {
	deadline := time.AfterFunc(120*time.Second, func() {
		q.mu.Lock()
		q.eof = true // give up
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer deadline.Stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for strings.Count(q.out.String(), qemuIOPrompt) < n {
		if q.eof {
			q.t.Fatalf("qemu-io: %s did not finish (or qemu-io exited); output:\n%s", what, q.out.String())
		}
		q.cond.Wait()
	}
}

// run sends one command, waits until qemu-io took it (and, for a
// synchronous command, finished it), and returns what it printed since.
func (q *qemuIO) run(cmd string) string {
	q.mu.Lock()
	start := q.out.Len()
	n := strings.Count(q.out.String(), qemuIOPrompt)
	q.mu.Unlock()
	if _, err := fmt.Fprintln(q.in, cmd); err != nil {
		q.t.Fatalf("qemu-io %q: %v", cmd, err)
	}
	q.waitPrompts(n+1, fmt.Sprintf("%q", cmd))
	q.mu.Lock()
	defer q.mu.Unlock()
	return strings.ReplaceAll(q.out.String()[start:], qemuIOPrompt, "")
}

// send queues an asynchronous command (aio_read, aio_write).
func (q *qemuIO) send(cmd string) { q.run(cmd) }

// mark returns the position of qemu-io's output so far, for close.
func (q *qemuIO) mark() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.out.Len()
}

// close ends qemu-io and returns what it printed after mark.
func (q *qemuIO) close(mark int) string {
	fmt.Fprintln(q.in, "quit")
	q.in.Close()
	q.cmd.Wait()
	q.mu.Lock()
	defer q.mu.Unlock()
	return strings.ReplaceAll(q.out.String()[mark:], qemuIOPrompt, "")
}
