package test

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOwnerKilledFailsOverToInSyncCopy: a LUN with two copies is served
// Active/Optimized by its owner and refused (ALUA Standby) on the other
// copy's portal; kill -9 of the owner moves the LUN to the in-sync copy
// under a new epoch, where every byte written before the kill reads back
// and new writes work; the old owner restarts as a standby copy, is
// caught up, and all copies end identical.
func TestOwnerKilledFailsOverToInSyncCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hatgt processes; skipped with -short")
	}
	needTools(t, "qemu-img")
	const iqn = "iqn.2026-11.io.hatgt:failover"
	c := newTestCluster(t, 3)
	lead, copies, l := replOnFollowers(c, iqn, "64M")
	owner, standby := copies[0], copies[1]
	epoch := l.Epoch

	src, data := randomImage(t, 16<<20)
	c.waitFor("the owner serves the LUN", 30*time.Second, servesIO(replURL(owner, iqn, 0)))
	writeImage(t, src, replURL(owner, iqn, 0), "the owner")
	// The other copy's portal lists the LUN but refuses IO: standby.
	out, err := tool("qemu-img", "info", replURL(standby, iqn, 0))
	if err == nil || !strings.Contains(out, "NOT READY") {
		t.Fatalf("IO through the standby copy's portal: err %v, output %s; want NOT READY (ALUA standby)", err, out)
	}

	failOver(c, lead, iqn, epoch, "killed", owner.kill9, standby, data)
	newOwner := standby
	src2, data2 := randomImage(t, 8<<20)
	writeImage(t, src2, replURL(newOwner, iqn, 0), "the new owner")

	owner.start()
	l = waitAllInSync(c, lead, iqn, 0, 90*time.Second)
	if l.Owner != newOwner.id {
		t.Fatalf("owner moved back to %s after the restart: %s", l.Owner, l.summary())
	}
	f := checkCopiesIdentical(t, c, iqn, l)
	if !bytes.Equal(readFileRange(t, f, 0, int64(len(data2))), data2) {
		t.Fatal("the new owner's copy lacks the write made after the failover")
	}
	if out, rc := runLUNVerify(lead, iqn, 0); rc != 0 {
		t.Fatalf("lun verify after the failover exited %d:\n%s", rc, out)
	}
}

// TestLostCopyGetsFullCopy: a mirror's node restarts with its backing file
// gone (a replaced disk); it must not count as in sync: its node records
// it out of sync, the owner gives it a full copy, and the copies end
// identical.
func TestLostCopyGetsFullCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hatgt processes; skipped with -short")
	}
	needTools(t, "qemu-img")
	const iqn = "iqn.2026-11.io.hatgt:lost"
	c, placement := replSetup(t, 2, iqn)
	owner, mirror := placement[0], placement[1]
	createReplicatedLUN(owner, iqn, 0, "32M", placement)
	l := waitAllInSync(c, owner, iqn, 0, 60*time.Second)
	src, _ := randomImage(t, 16<<20)
	c.waitFor("the owner serves the LUN", 30*time.Second, servesIO(replURL(owner, iqn, 0)))
	// -t none: the write ends with a flush, so no region counts as
	// possibly lost from the mirror's cache; only the lost file does.
	if out, err := tool("qemu-img", "convert", "-n", "-t", "none", "-f", "raw", "-O", "raw", src, replURL(owner, iqn, 0)); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}
	mirror.signal(syscall.SIGTERM)
	<-mirror.done
	if err := os.Remove(backingFile(mirror, iqn, l)); err != nil {
		t.Fatal(err)
	}
	mirror.start()
	l = waitReplLUN(c, owner, iqn, 0, "the lost copy resynced in full", 60*time.Second, func(l *replLUN) (bool, string) {
		cp := l.copyOf(mirror.id)
		ok, why := l.allInSync()
		return ok && cp != nil && int64(cp.BytesCopied) == int64(l.Size), fmt.Sprintf("%s (%s)", l.summary(), why)
	})
	checkCopiesIdentical(t, c, iqn, l)
}

// TestBlankDiskMirrorGetsFullCopy: a mirror's node stops and its backing
// file is replaced by a blank one of the same size (a disk swapped while
// the machine was down) while the owner keeps writing. The copy is not the
// one the cluster recorded (invariant 7): it must get a full copy before
// it counts as in sync, not just the regions written while it was down,
// and after a failover to it every byte written before reads back. (A
// file of the same size is not "created again": before copy identities
// the copy got its dirty regions only, and the failover lost the rest.)
func TestBlankDiskMirrorGetsFullCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hatgt processes; skipped with -short")
	}
	needTools(t, "qemu-img", "qemu-io")
	const (
		iqn  = "iqn.2026-11.io.hatgt:blank-disk"
		offB = 24 << 20 // written while the mirror is down
		lenB = 2 << 20
	)
	c := newTestCluster(t, 3)
	lead, copies, l := replOnFollowers(c, iqn, "32M")
	owner, mirror := copies[0], copies[1]
	src, data := randomImage(t, 16<<20)
	url := replURL(owner, iqn, 0)
	c.waitFor("the owner serves the LUN", 30*time.Second, servesIO(url))
	// -t none: the write ends with a flush, so no region counts as
	// possibly lost from the mirror's cache: the dirty map holds only
	// what the mirror misses while it is down.
	if out, err := tool("qemu-img", "convert", "-n", "-t", "none", "-f", "raw", "-O", "raw", src, url); err != nil {
		t.Fatalf("write: %v\n%s", err, out)
	}

	mirror.signal(syscall.SIGTERM)
	<-mirror.done
	f := backingFile(mirror, iqn, l)
	st, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, st.Size()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s's copy replaced by a blank file of %d bytes", mirror.id, st.Size())
	if out := runTool(t, "qemu-io", qemuIOWrites(url, 0x6b, offB, lenB, 1<<20)...); qemuIOFailed(out) {
		t.Fatalf("qemu-io while the mirror is down:\n%s", out)
	}
	waitReplLUN(c, lead, iqn, 0, mirror.id+" out of the in-sync set", 60*time.Second, func(l *replLUN) (bool, string) {
		return !slices.Contains(l.InSync, mirror.id), l.summary()
	})

	mirror.start()
	l = waitAllInSync(c, lead, iqn, 0, 90*time.Second)
	cp := l.copyOf(mirror.id)
	t.Logf("back in sync: %s", l.summary())
	if int64(cp.BytesCopied) != int64(l.Size) {
		t.Fatalf("%s's blank copy rejoined the in-sync set after a resync of %.0f bytes, want a full copy of %d", mirror.id, cp.BytesCopied, l.Size)
	}
	checkCopiesIdentical(t, c, iqn, l)

	failOver(c, lead, iqn, l.Epoch, "killed", owner.kill9, mirror, data)
	got := readLUN(t, replURL(mirror, iqn, 0), "the new owner")
	if !bytes.Equal(got[offB:offB+lenB], bytes.Repeat([]byte{0x6b}, lenB)) {
		t.Fatal("the write made while the mirror was down does not read back from it as the new owner")
	}
}

// TestOwnerLeaseBlipRecovers: an owner cut off from the cluster for a
// little longer than its lease stops serving (its lease ran out) but,
// healed before any failover, must serve again by itself: no state change
// comes to trigger its reconciler. Needs network namespaces (root).
func TestOwnerLeaseBlipRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hatgt processes; skipped with -short")
	}
	needTools(t, "qemu-img")
	const iqn = "iqn.2026-11.io.hatgt:blip"
	c := newNetnsCluster(t, 3)
	lead, copies, _ := replOnFollowers(c, iqn, "16M")
	owner := copies[0]
	c.waitFor("the owner serves the LUN", 30*time.Second, servesIO(replURL(owner, iqn, 0)))

	owner.isolate()
	c.waitFor("the cut-off owner deposes its volume", 30*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(owner.logPath)
		return strings.Contains(string(b), "owner lease lost"), "no lease-loss line in " + owner.logPath
	})
	owner.heal()
	c.waitFor("the LUN served again after the heal", 60*time.Second, func() (bool, string) {
		l, err := replLUNOf(lead, iqn, 0)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range copies {
			if p.id == l.Owner {
				ok, why := servesIO(replURL(p, iqn, 0))()
				return ok, "owner " + l.Owner + ": " + why
			}
		}
		return false, "owner " + l.Owner + " is not a copy"
	})
}

// TestOwnerPartitionedFailsOver: an owner cut off from the network (no
// RST, no answer: a dead switch port or a powered-off machine) loses its
// lease and stops serving; the LUN moves to the in-sync copy, which
// serves every byte written before the cut; healed, the old owner comes
// back as an up-to-date standby. Needs network namespaces (root).
func TestOwnerPartitionedFailsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hatgt processes; skipped with -short")
	}
	needTools(t, "qemu-img")
	const iqn = "iqn.2026-11.io.hatgt:cut-owner"
	c := newNetnsCluster(t, 3)
	lead, copies, l := replOnFollowers(c, iqn, "32M")
	owner, standby := copies[0], copies[1]
	epoch := l.Epoch
	c.waitFor("the owner serves the LUN", 30*time.Second, servesIO(replURL(owner, iqn, 0)))
	src, data := randomImage(t, 8<<20)
	writeImage(t, src, replURL(owner, iqn, 0), "the owner")

	failOver(c, lead, iqn, epoch, "cut off", owner.isolate, standby, data)
	owner.heal()
	l = waitAllInSync(c, lead, iqn, 0, 90*time.Second)
	if l.Owner != standby.id {
		t.Fatalf("owner moved back to %s after the heal: %s", l.Owner, l.summary())
	}
	checkCopiesIdentical(t, c, iqn, l)
}

// failOver applies fault to the owner of LUN 0 of iqn (at epoch) and
// waits until the LUN moved to standby in a newer epoch and standby
// serves it, with data at its start. The time from the fault to the new
// owner serving is logged (not asserted).
func failOver(c *testCluster, lead *clusterProc, iqn string, epoch uint64, what string, fault func(), standby *clusterProc, data []byte) {
	c.t.Helper()
	start := time.Now()
	fault()
	l := waitReplLUN(c, lead, iqn, 0, "the LUN moved to the in-sync copy", 60*time.Second, func(l *replLUN) (bool, string) {
		return l.Owner == standby.id && l.Epoch > epoch, l.summary()
	})
	c.waitFor("the new owner serves the LUN", 60*time.Second, servesIO(replURL(standby, iqn, 0)))
	c.t.Logf("owner %s; %s serves the LUN in epoch %d after %v", what, standby.id, l.Epoch, time.Since(start).Round(100*time.Millisecond))
	if got := readLUN(c.t, replURL(standby, iqn, 0), "the new owner"); !bytes.Equal(got[:len(data)], data) {
		c.t.Fatalf("data written before the owner was %s does not read back from the new owner", what)
	}
}
