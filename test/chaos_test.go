package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestNoAcknowledgedWriteLost is the safety check of replication as a
// whole (DRBD protocol C's promise): an initiator keeps writing to a
// 3-copy LUN through whichever node owns it while, one after the other, a
// mirror is killed, a mirror is stopped past the ack timeout, the owner is
// killed, the owner is cut off the network, and the Raft leader is
// killed. Every write gives one 4 KiB block a new version (a byte
// pattern); qemu-io says which writes were acknowledged. At the end every
// block must hold its last acknowledged version or a later one that was
// sent but not acknowledged, never an older one, and every copy must be
// identical. Needs network namespaces (root).
func TestNoAcknowledgedWriteLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hatgt processes; skipped with -short")
	}
	needTools(t, "qemu-io", "qemu-img")
	const iqn = "iqn.2026-11.io.hatgt:chaos"
	c := newNetnsCluster(t, 3)
	lead := c.leader()
	lead.hatgt("target", "create", iqn)
	createReplicatedLUN(lead, iqn, 0, "16M", c.nodes)
	l := waitAllInSync(c, lead, iqn, 0, 60*time.Second)
	c.waitFor("the owner serves the LUN", 30*time.Second, servesIO(replURL(c.node(l.Owner), iqn, 0)))

	w := newChaosWriter(c, iqn)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); w.run(stop) }()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()

	// Each fault, then the LUN back to all copies in sync (with writes
	// going on) before the next. A fault must not stop the writes for
	// good: each phase must see acknowledged writes.
	settle := func(what string) {
		t.Helper()
		before := w.acks()
		l = waitAllInSyncVia(c, iqn, 3*time.Minute)
		c.waitFor("writes acknowledged after: "+what, time.Minute, func() (bool, string) {
			n := w.acks()
			return n > before+20, fmt.Sprintf("%d writes acknowledged, %d before", n, before)
		})
		t.Logf("%s: owner %s epoch %d, %d writes acknowledged so far", what, l.Owner, l.Epoch, w.acks())
	}
	other := func(not ...string) *clusterProc {
		for _, p := range c.nodes {
			if !slices.Contains(not, p.id) {
				return p
			}
		}
		t.Fatal("no node left")
		return nil
	}
	settle("start")

	mirror := other(l.Owner)
	mirror.kill9()
	time.Sleep(2 * time.Second)
	mirror.start()
	settle("mirror " + mirror.id + " killed and restarted")

	mirror = other(l.Owner)
	mirror.pause()
	time.Sleep(7 * time.Second) // past the 5 s ack timeout: it is dropped
	mirror.resume()
	settle("mirror " + mirror.id + " stopped for 7 s")

	owner := c.node(l.Owner)
	owner.kill9()
	waitOwnerMoved(c, iqn, owner.id, time.Minute)
	owner.start()
	settle("owner " + owner.id + " killed, moved and restarted")

	owner = c.node(l.Owner)
	owner.isolate()
	waitOwnerMoved(c, iqn, owner.id, time.Minute)
	owner.heal()
	settle("owner " + owner.id + " cut off, moved and healed")

	leader := c.leader()
	leader.kill9()
	time.Sleep(3 * time.Second)
	leader.start()
	settle("Raft leader " + leader.id + " killed and restarted")

	close(stop)
	<-done
	l = waitAllInSyncVia(c, iqn, 3*time.Minute)
	acked, tried := w.result()
	t.Logf("%d writes acknowledged, %d sent without an acknowledgement", w.acks(), w.unacked())

	// Read the LUN through its owner, and check every block.
	ownerNode := c.node(l.Owner)
	data := readLUN(t, replURL(ownerNode, iqn, 0), "the owner "+l.Owner)
	lost := 0
	for b := range chaosBlocks {
		blk := data[b*chaosBlock : (b+1)*chaosBlock]
		v := blk[0]
		uniform := bytes.Count(blk, []byte{v}) == len(blk)
		if !uniform || v < acked[b] || v > tried[b] {
			lost++
			if lost <= 10 {
				t.Errorf("block %d holds version %d (uniform %v): last acknowledged %d, last sent %d", b, v, uniform, acked[b], tried[b])
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d blocks lost an acknowledged write or hold garbage", lost, chaosBlocks)
	}
	checkCopiesIdentical(t, c, iqn, l)
	if out, rc := runLUNVerify(ownerNode, iqn, 0); rc != 0 {
		t.Fatalf("lun verify exited %d:\n%s", rc, out)
	}
}

const (
	chaosBlock  = 4096
	chaosBlocks = 1024 // the first 4 MiB of the LUN
	chaosBatch  = 16   // writes per qemu-io run
)

// chaosWriter writes new versions of random blocks through the current
// owner's portal, one qemu-io run of chaosBatch writes at a time (FUA
// writes, or plain ones in write-back mode), and records what was
// acknowledged. Versions are pattern bytes 1..255, so a
// block takes at most 255 writes.
type chaosWriter struct {
	c   *testCluster
	iqn string

	mu      sync.Mutex
	acked   [chaosBlocks]byte // last acknowledged version of each block
	tried   [chaosBlocks]byte // last version sent
	nAcked  int
	nFailed int
	runs    int
}

func newChaosWriter(c *testCluster, iqn string) *chaosWriter {
	return &chaosWriter{c: c, iqn: iqn}
}

var wroteRe = regexp.MustCompile(`(?m)^wrote \d+/\d+ bytes at offset (\d+)$`)

func (w *chaosWriter) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		portal := w.ownerPortal()
		if portal == "" {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		// chaosBatch distinct blocks, each to its next version.
		w.mu.Lock()
		perm := rand.Perm(chaosBlocks)
		var blocks []int
		for _, b := range perm {
			if w.tried[b] < 255 {
				blocks = append(blocks, b)
			}
			if len(blocks) == chaosBatch {
				break
			}
		}
		// Every other run in write-back mode: plain writes (and a
		// SYNCHRONIZE CACHE when qemu-io closes) instead of FUA writes.
		args := []string{"-f", "raw"}
		if w.runs++; w.runs%2 == 0 {
			args = append(args, "-t", "writeback")
		}
		version := map[int64]byte{}
		for _, b := range blocks {
			w.tried[b]++
			off := int64(b) * chaosBlock
			version[off] = w.tried[b]
			args = append(args, "-c", fmt.Sprintf("write -P 0x%02x %d %d", w.tried[b], off, chaosBlock))
		}
		w.mu.Unlock()
		if len(blocks) == 0 {
			return // every block written 255 times
		}
		args = append(args, fmt.Sprintf("iscsi://%s/%s/0", portal, w.iqn))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, _ := exec.CommandContext(ctx, "qemu-io", args...).CombinedOutput()
		cancel()
		ok := 0
		w.mu.Lock()
		for _, m := range wroteRe.FindAllStringSubmatch(string(out), -1) {
			off, _ := strconv.ParseInt(m[1], 10, 64)
			if v, found := version[off]; found {
				w.acked[off/chaosBlock] = v
				ok++
			}
		}
		w.nAcked += ok
		w.nFailed += len(blocks) - ok
		w.mu.Unlock()
		if ok < len(blocks) {
			time.Sleep(100 * time.Millisecond) // a failover may be under way
		}
	}
}

// ownerPortal asks the nodes, in turn, who owns the LUN and returns its
// portal, or "" when no node answers within a short timeout.
func (w *chaosWriter) ownerPortal() string {
	for _, p := range w.c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		cmd := exec.CommandContext(ctx, w.c.bin, "status", "--json")
		cmd.Env = append(os.Environ(), w.c.env...)
		cmd.Env = append(cmd.Env, "HATGT_ADDR="+p.api())
		out, err := cmd.Output()
		cancel()
		if err != nil && !statusHasProblems(err) {
			continue
		}
		var st replStatus
		if json.Unmarshal(out, &st) != nil {
			continue
		}
		for _, ts := range st.Targets {
			for _, l := range ts.LUNs {
				if ts.IQN != w.iqn || l.LUN != 0 || l.Owner == "" {
					continue
				}
				for _, q := range w.c.nodes {
					if q.id == l.Owner {
						return q.portal()
					}
				}
			}
		}
	}
	return ""
}

func (w *chaosWriter) acks() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nAcked
}

func (w *chaosWriter) unacked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nFailed
}

func (w *chaosWriter) result() (acked, tried [chaosBlocks]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked, w.tried
}

// waitAllInSyncVia is waitAllInSync asking whichever node answers (the
// one asked before may be down).
func waitAllInSyncVia(c *testCluster, iqn string, limit time.Duration) *replLUN {
	c.t.Helper()
	var last *replLUN
	c.waitFor("every copy of "+iqn+" in sync", limit, func() (bool, string) {
		var why []string
		for _, p := range c.nodes {
			if !p.running() || p.cut || p.paused {
				continue
			}
			l, err := replLUNOf(p, iqn, 0)
			if err != nil {
				why = append(why, err.Error())
				continue
			}
			last = l
			return l.allInSync()
		}
		return false, strings.Join(why, "; ")
	})
	return last
}

// waitOwnerMoved waits until a node other than from owns the LUN.
func waitOwnerMoved(c *testCluster, iqn, from string, limit time.Duration) {
	c.t.Helper()
	c.waitFor("the LUN moved off "+from, limit, func() (bool, string) {
		for _, p := range c.nodes {
			if p.id == from || !p.running() || p.cut || p.paused {
				continue
			}
			l, err := replLUNOf(p, iqn, 0)
			if err != nil {
				continue
			}
			return l.Owner != from && l.Owner != "", l.summary()
		}
		return false, "no node answers"
	})
}
