package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// TestClusterOfThree runs one three-node cluster of real processes through
// its life: forming, a change made through a follower, discovery and IO
// through the portals, the leader killed with SIGKILL, a paused follower,
// and the killed node restarting. The steps share the cluster (starting
// one costs seconds), so a failed step ends the test.
func TestClusterOfThree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three hatgt processes; skipped with -short")
	}
	c := newTestCluster(t, 3)
	const iqn = "iqn.2026-11.io.hatgt:cluster-test"
	src := filepath.Join(t.TempDir(), "src.img") // what OwnerServesIO wrote
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"StatusOnEveryNode", func(t *testing.T) { checkStatusEverywhere(t, c) }},
		{"ChangeThroughFollower", func(t *testing.T) { createThroughFollower(t, c, iqn) }},
		{"DiscoveryThroughEveryPortal", func(t *testing.T) { discoverEverywhere(t, c, iqn) }},
		{"OwnerServesIO", func(t *testing.T) { ownerServesIO(t, c, iqn, src) }},
		{"ACLAndCHAPReachTheOwner", func(t *testing.T) { aclAndCHAP(t, c, iqn) }},
		{"PausedFollowerCatchesUp", func(t *testing.T) { pausedFollowerCatchesUp(t, c) }},
		{"LeaderKilledAndRestarted", func(t *testing.T) { leaderKilledAndRestarted(t, c, iqn, src) }},
	}
	for _, s := range steps {
		// The harness's helpers (waitFor, hatgt, ...) fail c.t: point it
		// at the step running now.
		ok := t.Run(s.name, func(t *testing.T) { c.t = t; s.fn(t) })
		c.t = t
		if !ok {
			return
		}
	}
}

// checkStatusEverywhere: "hatgt status --json" on every node shows three
// voters, one leader that all agree on, and every node alive.
func checkStatusEverywhere(t *testing.T, c *testCluster) {
	// Health is recorded by the leader from gossip; give it time to
	// converge, then check each node's own answer through the CLI.
	c.waitFor("every node alive in every node's view", 30*time.Second, func() (bool, string) {
		for _, p := range c.nodes {
			st, err := p.status()
			if err != nil {
				return false, err.Error()
			}
			for _, ns := range st.Nodes {
				if !ns.Alive || ns.Health != cluster.HealthAlive {
					return false, fmt.Sprintf("%s sees %s alive=%v health=%q", p.id, ns.ID, ns.Alive, ns.Health)
				}
			}
		}
		return true, ""
	})
	leaders := map[string]bool{}
	for _, p := range c.nodes {
		st := p.statusJSON()
		if st.Node != p.id {
			t.Errorf("status via %s names node %q", p.id, st.Node)
		}
		if got := voters(st); got != 3 || len(st.Nodes) != 3 {
			t.Errorf("%s: %d nodes, %d voters; want 3 and 3", p.id, len(st.Nodes), got)
		}
		roles := 0
		for _, ns := range st.Nodes {
			if ns.RaftRole == "leader" {
				roles++
				if ns.ID != st.Leader {
					t.Errorf("%s: node %s has role leader but the leader is %q", p.id, ns.ID, st.Leader)
				}
			}
			if !ns.Alive || ns.Health != cluster.HealthAlive {
				t.Errorf("%s: node %s alive=%v health=%q", p.id, ns.ID, ns.Alive, ns.Health)
			}
			want := c.node(ns.ID)
			if ns.ISCSIPortal != want.portal() || ns.APIAddr != want.api() {
				t.Errorf("%s: node %s portal %s api %s, want %s and %s", p.id, ns.ID, ns.ISCSIPortal, ns.APIAddr, want.portal(), want.api())
			}
		}
		if roles != 1 {
			t.Errorf("%s: %d nodes with role leader, want 1", p.id, roles)
		}
		leaders[st.Leader] = true
	}
	if len(leaders) != 1 {
		t.Errorf("nodes disagree on the leader: %v", leaders)
	}
}

// createThroughFollower: a target and a LUN created through a follower
// appear, with the same owner, in every node's state.
func createThroughFollower(t *testing.T, c *testCluster, iqn string) {
	f := c.followers()[0]
	f.hatgt("target", "create", iqn, "--alias", "cluster test")
	f.hatgt("lun", "create", iqn, "--lun", "0", "--size", "64M")
	owner := ""
	c.waitFor("the target and LUN on every node", 30*time.Second, func() (bool, string) {
		owner = ""
		for _, p := range c.nodes {
			st, err := p.status()
			if err != nil {
				return false, err.Error()
			}
			l := findLUN(st, iqn, 0)
			if l == nil {
				return false, fmt.Sprintf("%s has no %s LUN 0", p.id, iqn)
			}
			if owner != "" && l.Owner != owner {
				return false, fmt.Sprintf("owners differ: %s vs %s", l.Owner, owner)
			}
			owner = l.Owner
			if l.Size != 64<<20 {
				t.Errorf("%s: LUN size %d, want 64 MiB", p.id, l.Size)
			}
		}
		return true, ""
	})
	// The owner created the backing file in its data dir.
	o := c.node(owner)
	p := cluster.DefaultBackingPath(o.dataDir, iqn, 0, 1) // the cluster's first LUN: ID 1
	c.waitFor("the owner's backing file", 10*time.Second, func() (bool, string) {
		st, err := os.Stat(p)
		if err != nil {
			return false, err.Error()
		}
		return st.Size() == 64<<20, fmt.Sprintf("%s is %d bytes", p, st.Size())
	})
}

func findLUN(st cluster.Status, iqn string, n uint64) *cluster.LUN {
	for _, ts := range st.Targets {
		if ts.IQN == iqn {
			for i := range ts.LUNs {
				if ts.LUNs[i].LUN.LUN == n {
					return &ts.LUNs[i].LUN
				}
			}
		}
	}
	return nil
}

func ownerOf(t *testing.T, c *testCluster, iqn string) *clusterProc {
	t.Helper()
	st, err := c.leader().status()
	if err != nil {
		t.Fatal(err)
	}
	l := findLUN(st, iqn, 0)
	if l == nil {
		t.Fatalf("no %s LUN 0 in the leader's state", iqn)
	}
	return c.node(l.Owner)
}

// discoverEverywhere: SendTargets through any node's portal lists the
// target at the owner's portal, and iscsi-ls (which logs in there) sees
// the LUN.
func discoverEverywhere(t *testing.T, c *testCluster, iqn string) {
	needTools(t, "iscsi-ls")
	owner := ownerOf(t, c, iqn)
	for _, p := range c.nodes {
		var out string
		// The target appears on a node when its reconciler ran; poll.
		c.waitFor("iscsi-ls through "+p.id, 20*time.Second, func() (bool, string) {
			var err error
			out, err = tool("iscsi-ls", "-s", "iscsi://"+p.portal())
			return err == nil && strings.Contains(out, "Target:"+iqn), fmt.Sprintf("%v: %s", err, out)
		})
		if !strings.Contains(out, "Portal:"+owner.portal()+",") {
			t.Errorf("iscsi-ls through %s does not list the owner %s's portal %s:\n%s", p.id, owner.id, owner.portal(), out)
		}
		for _, o := range c.nodes {
			if o != owner && strings.Contains(out, "Portal:"+o.portal()+",") {
				t.Errorf("iscsi-ls through %s lists %s, which does not serve the LUN:\n%s", p.id, o.id, out)
			}
		}
		if !strings.Contains(out, "Lun:0") {
			t.Errorf("iscsi-ls through %s shows no LUN 0:\n%s", p.id, out)
		}
	}
}

// ownerServesIO: qemu-img writes an image to the LUN through the owner's
// portal and reads it back identical.
func ownerServesIO(t *testing.T, c *testCluster, iqn, src string) {
	needTools(t, "qemu-img")
	owner := ownerOf(t, c, iqn)
	data := make([]byte, 64<<20)
	rand.Read(data[:4<<20]) // random head, zero tail: the whole LUN is compared
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("iscsi://%s/%s/0", owner.portal(), iqn)
	runTool(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, url)
	back := filepath.Join(t.TempDir(), "back.img")
	runTool(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, back)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes differing from the %d written through %s", len(got), len(data), owner.id)
	}
}

// aclAndCHAP: an ACL and CHAP credentials set through a follower are
// enforced by the owner's portal, and lifted again when cleared.
func aclAndCHAP(t *testing.T, c *testCluster, iqn string) {
	needTools(t, "iscsi-ls", "iscsi-inq")
	owner := ownerOf(t, c, iqn)
	f := c.followers()[0]
	const allowed, other = "iqn.2026-11.io.hatgt:allowed", "iqn.2026-11.io.hatgt:other"
	sees := func(initiator, cred string) bool {
		out, _ := tool("iscsi-ls", "-s", "-i", initiator, "iscsi://"+cred+owner.portal())
		return strings.Contains(out, "Target:"+iqn) && strings.Contains(out, "Lun:0")
	}
	f.hatgt("acl", "add", iqn, allowed)
	c.waitFor("the ACL enforced by "+owner.id, 20*time.Second, func() (bool, string) {
		return !sees(other, ""), other + " still sees the LUN"
	})
	if !sees(allowed, "") {
		t.Errorf("%s, in the ACL, does not see the LUN through %s", allowed, owner.id)
	}
	f.hatgt("acl", "remove", iqn, allowed)
	c.waitFor("the ACL lifted on "+owner.id, 20*time.Second, func() (bool, string) {
		return sees(other, ""), other + " does not see the LUN"
	})

	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("cluster-chap-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.hatgt("chap", "set", iqn, "--user", "alice", "--secret-file", secret)
	// iscsi-inq logs in to the target directly, with the credentials
	// (and only there: discovery needs none).
	inq := func(cred string) bool {
		out, err := tool("iscsi-inq", fmt.Sprintf("iscsi://%s%s/%s/0", cred, owner.portal(), iqn))
		return err == nil && strings.Contains(out, "DIRECT_ACCESS")
	}
	c.waitFor("CHAP required by "+owner.id, 20*time.Second, func() (bool, string) {
		return !inq(""), "an initiator without credentials still logs in"
	})
	if !inq("alice%cluster-chap-secret@") {
		t.Errorf("the CHAP user cannot log in through %s", owner.id)
	}
	if inq("alice%wrong-chap-secret@") {
		t.Errorf("a wrong CHAP secret is accepted by %s", owner.id)
	}
	f.hatgt("chap", "clear", iqn)
	c.waitFor("CHAP cleared on "+owner.id, 20*time.Second, func() (bool, string) {
		return inq(""), "an initiator without credentials cannot log in"
	})
}

// pausedFollowerCatchesUp: a follower stopped with SIGSTOP misses a
// change; after SIGCONT it has it.
func pausedFollowerCatchesUp(t *testing.T, c *testCluster) {
	f := c.followers()[0]
	f.pause()
	paused := true
	defer func() {
		if paused {
			f.resume()
		}
	}()
	const iqn = "iqn.2026-11.io.hatgt:while-paused"
	c.leader().hatgt("target", "create", iqn)
	f.resume()
	paused = false
	c.waitFor(f.id+" has the change made while it was paused", 30*time.Second, func() (bool, string) {
		st, err := f.status()
		if err != nil {
			return false, err.Error()
		}
		for _, ts := range st.Targets {
			if ts.IQN == iqn {
				return true, ""
			}
		}
		return false, fmt.Sprintf("applied index %d, no %s", st.Applied, iqn)
	})
}

// leaderKilledAndRestarted: SIGKILL the leader; the survivors elect a new
// one (the time is logged, not asserted), take a change, and the killed
// node, restarted, catches up with it. The LUN's owner, restarted or not,
// serves what OwnerServesIO wrote (qemu-img flushed it before exiting).
func leaderKilledAndRestarted(t *testing.T, c *testCluster, lunIQN, src string) {
	old := c.leader()
	old.kill9()
	killed := time.Now()
	var survivors []*clusterProc
	for _, p := range c.nodes {
		if p != old {
			survivors = append(survivors, p)
		}
	}
	newLeader := ""
	c.waitFor("a new leader among the survivors", 30*time.Second, func() (bool, string) {
		for _, p := range survivors {
			st, err := p.status()
			if err != nil {
				return false, err.Error()
			}
			if st.Leader == "" || st.Leader == old.id {
				return false, fmt.Sprintf("%s sees leader %q", p.id, st.Leader)
			}
			newLeader = st.Leader
		}
		return true, ""
	})
	t.Logf("new leader %s elected %v after SIGKILL of leader %s", newLeader, time.Since(killed).Round(time.Millisecond), old.id)

	const iqn = "iqn.2026-11.io.hatgt:after-failover"
	var via *clusterProc
	for _, p := range survivors {
		if p.id != newLeader {
			via = p // a follower, so the change is forwarded
		}
	}
	start := time.Now()
	via.hatgt("target", "create", iqn)
	t.Logf("change through survivor %s committed %v after the new leader was seen", via.id, time.Since(start).Round(time.Millisecond))

	old.start()
	c.waitFor(old.id+" back, caught up and alive", 60*time.Second, func() (bool, string) {
		st, err := old.status()
		if err != nil {
			return false, err.Error()
		}
		if st.Leader == "" || voters(st) != 3 {
			return false, fmt.Sprintf("leader %q, %d voters", st.Leader, voters(st))
		}
		if !slices.ContainsFunc(st.Targets, func(ts cluster.TargetStatus) bool { return ts.IQN == iqn }) {
			return false, fmt.Sprintf("applied %d, no %s yet", st.Applied, iqn)
		}
		lst, err := c.node(newLeader).status()
		if err != nil {
			return false, err.Error()
		}
		for _, ns := range lst.Nodes {
			if ns.ID == old.id && (!ns.Alive || ns.Health != cluster.HealthAlive) {
				return false, fmt.Sprintf("leader sees %s alive=%v health=%q", old.id, ns.Alive, ns.Health)
			}
		}
		return true, ""
	})
	// Its iSCSI side converged too: it serves the new target (discovery
	// through its own portal lists it).
	needTools(t, "iscsi-ls")
	c.waitFor(old.id+" lists the new target", 20*time.Second, func() (bool, string) {
		out, err := tool("iscsi-ls", "iscsi://"+old.portal())
		return err == nil && strings.Contains(out, "Target:"+iqn), fmt.Sprintf("%v: %s", err, out)
	})

	needTools(t, "qemu-img")
	owner := ownerOf(t, c, lunIQN)
	url := fmt.Sprintf("iscsi://%s/%s/0", owner.portal(), lunIQN)
	c.waitFor("LUN 0 served by its owner "+owner.id, 20*time.Second, func() (bool, string) {
		out, err := tool("qemu-img", "info", url)
		return err == nil, fmt.Sprintf("%v: %s", err, out)
	})
	t.Logf("LUN 0's owner %s (the restarted node: %v) serves what was written before the kill", owner.id, owner == old)
	if out, err := tool("qemu-img", "compare", "-f", "raw", "-F", "raw", src, url); err != nil {
		t.Errorf("LUN 0 through %s (restarted: %v) differs from what was written: %v\n%s", owner.id, owner == old, err, out)
	}
}

// TestClusterPartitionedLeader cuts the leader off the network (its own
// network namespace, link down) while it keeps running: the majority
// elects a new leader and takes changes; the cut-off node refuses a change
// with "no cluster leader" (no quorum, no change) and, reconnected, has
// the majority's change and not its own.
func TestClusterPartitionedLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three hatgt processes; skipped with -short")
	}
	c := newNetnsCluster(t, 3)
	old := c.leader()
	old.isolate()
	cut := time.Now()
	var majority []*clusterProc
	for _, p := range c.nodes {
		if p != old {
			majority = append(majority, p)
		}
	}
	c.waitFor("a new leader of the majority", 30*time.Second, func() (bool, string) {
		for _, p := range majority {
			st, err := p.status()
			if err != nil {
				return false, err.Error()
			}
			if st.Leader == "" || st.Leader == old.id {
				return false, fmt.Sprintf("%s sees leader %q", p.id, st.Leader)
			}
		}
		return true, ""
	})
	newLeader := c.leader()
	t.Logf("new leader %s seen %v after cutting leader %s off", newLeader.id, time.Since(cut).Round(time.Millisecond), old.id)

	const lost, kept = "iqn.2026-11.io.hatgt:minority", "iqn.2026-11.io.hatgt:majority"
	start := time.Now()
	out, err := old.tryHatgtInside("target", "create", lost)
	if err == nil {
		t.Errorf("the cut-off node %s accepted a change:\n%s", old.id, out)
	} else if !strings.Contains(out, "no cluster leader") {
		t.Errorf("the cut-off node's refusal does not say there is no leader:\n%s", out)
	}
	t.Logf("cut-off node refused the change after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	majority[0].hatgt("target", "create", kept)

	old.heal()
	c.waitFor(old.id+" reconnected and caught up", 60*time.Second, func() (bool, string) {
		st, err := old.status()
		if err != nil {
			return false, err.Error()
		}
		if !slices.ContainsFunc(st.Targets, func(ts cluster.TargetStatus) bool { return ts.IQN == kept }) {
			return false, fmt.Sprintf("leader %q, applied %d, no %s", st.Leader, st.Applied, kept)
		}
		return true, ""
	})
	for _, p := range c.nodes {
		st, err := p.status()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(st.Targets, func(ts cluster.TargetStatus) bool { return ts.IQN == lost }) {
			t.Errorf("%s has %s, the change the cut-off node refused", p.id, lost)
		}
	}
}

// TestDevCluster runs "hatgt dev --nodes 2": it prints how to reach the
// cluster once it is up, the cluster answers there, and SIGINT stops every
// node.
func TestDevCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts hatgt processes; skipped with -short")
	}
	bin := hatgtBin
	if b := os.Getenv("HATGT_CLUSTER_BIN"); b != "" {
		bin = b
	}
	octet := -1
	for try := range 50 {
		if o := 100 + (os.Getpid()+31+try*7)%150; loopbackFree(o, 2) {
			octet = o
			break
		}
	}
	if octet < 0 {
		t.Skip("no free loopback address range")
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "dev", "--nodes", "2", "--data-dir", dir, "--first-ip", fmt.Sprintf("127.0.%d.11", octet))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	done := make(chan struct{})
	go func() {
		waitErr = cmd.Wait()
		close(done)
	}()
	defer func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("hatgt dev output:\n%s", out.String())
			for _, n := range []string{"n1", "n2"} {
				b, _ := os.ReadFile(filepath.Join(dir, n+".log"))
				t.Logf("---- %s log:\n%s", n, tail(string(b), 4000))
			}
		}
	}()
	api := fmt.Sprintf("127.0.%d.12:%d", octet, clusterAPIPort)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "2-node cluster is up") {
		select {
		case <-done:
			t.Fatalf("hatgt dev exited before the cluster was up: %v", waitErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("hatgt dev did not report the cluster up within a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "api "+api) {
		t.Errorf("hatgt dev does not print node n2's API address %s", api)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := cluster.NewClient(api, "", nil).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if voters(st) != 2 || st.Leader == "" {
		t.Errorf("n2's status: %d voters, leader %q; want 2 and a leader", voters(st), st.Leader)
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
		if waitErr != nil {
			t.Errorf("hatgt dev after SIGINT: %v", waitErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("hatgt dev did not stop after SIGINT")
	}
	for _, n := range []string{"11", "12"} {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.%d.%s:%d", octet, n, clusterAPIPort), time.Second); err == nil {
			c.Close()
			t.Errorf("node at 127.0.%d.%s still answers after hatgt dev stopped", octet, n)
		}
	}
}
