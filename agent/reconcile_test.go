package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/replication"
	"github.com/hatgt/hatgt/target"
)

// fakeServer records what the reconciler asks of the iSCSI server.
type fakeServer struct {
	targets map[string]target.TargetConfig
	adds    int
	removes int
}

func (f *fakeServer) AddTarget(tc target.TargetConfig) error {
	if _, ok := f.targets[strings.ToLower(tc.Name)]; ok {
		return errors.New("exists")
	}
	f.targets[strings.ToLower(tc.Name)] = tc
	f.adds++
	return nil
}

func (f *fakeServer) RemoveTarget(name string) error {
	if _, ok := f.targets[strings.ToLower(name)]; !ok {
		return errors.New("no such target")
	}
	delete(f.targets, strings.ToLower(name))
	f.removes++
	return nil
}

const testIQN = "iqn.2026-11.io.hatgt:rec"

// threeNodes returns a state with nodes n1..n3 and one target without LUNs.
func threeNodes() *cluster.State {
	s := cluster.NewState()
	for i, id := range []string{"n1", "n2", "n3"} {
		s.Nodes[id] = &cluster.NodeInfo{ID: id, ISCSIPortal: "127.0.0.1" + string(rune('1'+i)) + ":3260", Health: cluster.HealthAlive, Tag: uint16(i + 1)}
	}
	s.Targets[testIQN] = &cluster.Target{IQN: testIQN, LUNs: map[uint64]*cluster.LUN{}}
	return s
}

func addLUN(s *cluster.State, n uint64, size uint64, owner string, placement ...string) {
	s.Targets[testIQN].LUNs[n] = &cluster.LUN{
		Target: testIQN, LUN: n, Size: size, SectorSize: 512, IOMode: cluster.IOModeWriteBack,
		Backing: cluster.BackingFile, Replicas: len(placement), Placement: placement, Owner: owner,
		Epoch: 1, InSync: placement,
	}
}

type recFixture struct {
	t    *testing.T
	dir  string
	srv  *fakeServer
	st   *cluster.State
	rec  *reconciler
	node string
}

func newRecFixture(t *testing.T, node string) *recFixture {
	f := &recFixture{t: t, dir: t.TempDir(), srv: &fakeServer{targets: map[string]target.TargetConfig{}}, st: threeNodes(), node: node}
	f.rec = newReconciler(slog.New(slog.DiscardHandler), f.srv, node, func() *cluster.State { return f.st.Clone() })
	t.Cleanup(func() {
		if err := f.rec.close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return f
}

func (f *recFixture) reconcile() error {
	return f.rec.Reconcile(context.Background(), cluster.DesiredFor(f.st, f.node, f.dir, 1))
}

func (f *recFixture) served() []uint64 {
	rt := f.rec.targets[strings.ToLower(testIQN)]
	if rt == nil {
		return nil
	}
	return rt.dev.LUNs()
}

func TestReconcileServesOwnedLUNsAndCreatesMirrorFiles(t *testing.T) {
	f := newRecFixture(t, "n2")
	addLUN(f.st, 0, 1<<20, "n2", "n2", "n3") // owned here
	addLUN(f.st, 1, 2<<20, "n1", "n1", "n2") // a mirror here
	addLUN(f.st, 2, 1<<20, "n3", "n3")       // not here
	if err := f.reconcile(); err != nil {
		t.Fatal(err)
	}
	tc, ok := f.srv.targets[strings.ToLower(testIQN)]
	if !ok {
		t.Fatalf("target not added; server has %v", f.srv.targets)
	}
	if tc.PortalGroupTag != 2 || tc.RelativePortID != 2 {
		t.Errorf("n2's tag = %d, relative port %d; want 2 (its place among n1..n3)", tc.PortalGroupTag, tc.RelativePortID)
	}
	if got := f.served(); !slices.Equal(got, []uint64{0}) {
		t.Errorf("served LUNs = %v, want [0]", got)
	}
	// Both are replicated: the LUN's data, then the copy's identity block.
	for n, size := range map[uint64]int64{0: 1 << 20, 1: 2 << 20} {
		p := cluster.DefaultBackingPath(f.dir, testIQN, n, 0)
		st, err := os.Stat(p)
		if want := size + replication.IdentitySize; err != nil || st.Size() != want {
			t.Errorf("LUN %d backing file %s: %v, size %v; want %d bytes", n, p, err, st, want)
		}
	}
	if sz := f.rec.targets[strings.ToLower(testIQN)].luns[0].lu.Blocks() * 512; sz != 1<<20 {
		t.Errorf("LUN 0 exposes %d bytes, want the LUN's %d", sz, 1<<20)
	}
	if _, err := os.Stat(cluster.DefaultBackingPath(f.dir, testIQN, 2, 0)); !os.IsNotExist(err) {
		t.Errorf("LUN 2 is not placed on n2 but its file exists (%v)", err)
	}

	// Idempotent: the same state again changes nothing.
	adds := f.srv.adds
	if err := f.reconcile(); err != nil {
		t.Fatal(err)
	}
	if f.srv.adds != adds || f.srv.removes != 0 {
		t.Errorf("second reconcile of the same state: %d adds, %d removes; want none", f.srv.adds-adds, f.srv.removes)
	}
}

func TestReconcileFollowsOwnershipDeletionAndTargetRemoval(t *testing.T) {
	f := newRecFixture(t, "n1")
	addLUN(f.st, 0, 1<<20, "n1", "n1", "n2")
	addLUN(f.st, 1, 1<<20, "n1", "n1")
	if err := f.reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := f.served(); !slices.Equal(got, []uint64{0, 1}) {
		t.Fatalf("served = %v, want [0 1]", got)
	}
	// LUN 0 moves to n2 (new epoch); LUN 1 is deleted.
	l := f.st.Targets[testIQN].LUNs[0]
	l.Owner, l.Epoch = "n2", 2
	delete(f.st.Targets[testIQN].LUNs, 1)
	if err := f.reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := f.served(); len(got) != 0 {
		t.Errorf("after the move and the delete, served = %v, want none", got)
	}
	// Ownership comes back: served again from the same file.
	l.Owner, l.Epoch = "n1", 3
	if err := f.reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := f.served(); !slices.Equal(got, []uint64{0}) {
		t.Errorf("after ownership came back, served = %v, want [0]", got)
	}
	// The target goes away.
	delete(f.st.Targets, testIQN)
	if err := f.reconcile(); err != nil {
		t.Fatal(err)
	}
	if len(f.srv.targets) != 0 || len(f.rec.targets) != 0 {
		t.Errorf("target still running after its deletion: server %v, reconciler %v", f.srv.targets, f.rec.targets)
	}
}

func TestReconcileAppliesACLAndCHAPChanges(t *testing.T) {
	f := newRecFixture(t, "n1")
	addLUN(f.st, 0, 1<<20, "n1", "n1")
	if err := f.reconcile(); err != nil {
		t.Fatal(err)
	}
	tg := f.st.Targets[testIQN]
	tg.ACL = []string{"iqn.2026-11.test:b", "iqn.2026-11.test:a"}
	tg.CHAP = &cluster.CHAP{User: "u", Secret: "0123456789abcdef"}
	if err := f.reconcile(); err != nil {
		t.Fatal(err)
	}
	tc := f.srv.targets[strings.ToLower(testIQN)]
	if len(tc.ACL) != 2 || tc.CHAP == nil || tc.CHAP.User != "u" || tc.CHAP.Secret != "0123456789abcdef" {
		t.Errorf("target config after ACL and CHAP change: ACL %v, CHAP %+v", tc.ACL, tc.CHAP)
	}
	if got := f.served(); !slices.Equal(got, []uint64{0}) {
		t.Errorf("LUNs after a settings change = %v, want [0] kept", got)
	}
	if tc.Device != f.rec.targets[strings.ToLower(testIQN)].dev {
		t.Errorf("target re-added with another device: its LUNs would be lost")
	}
	tg.CHAP = nil
	if err := f.reconcile(); err != nil {
		t.Fatal(err)
	}
	if tc := f.srv.targets[strings.ToLower(testIQN)]; tc.CHAP != nil {
		t.Errorf("CHAP still required after it was cleared")
	}
}

func TestReconcileReportsBadLUNAndServesTheOthers(t *testing.T) {
	f := newRecFixture(t, "n1")
	addLUN(f.st, 0, 1<<20, "n1", "n1")
	addLUN(f.st, 1, 1<<20, "n1", "n1")
	// LUN 1's file exists with another size: refused, never resized.
	p := cluster.DefaultBackingPath(f.dir, testIQN, 1, 0)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, make([]byte, 4096), 0o640); err != nil {
		t.Fatal(err)
	}
	err := f.reconcile()
	if err == nil || !strings.Contains(err.Error(), "LUN 1") {
		t.Errorf("reconcile = %v, want an error naming LUN 1", err)
	}
	if got := f.served(); !slices.Equal(got, []uint64{0}) {
		t.Errorf("served = %v, want [0] despite LUN 1's error", got)
	}
	if st, _ := os.Stat(p); st == nil || st.Size() != 4096 {
		t.Errorf("the mismatched file was changed: %v", st)
	}
}

func TestReconcileWaitsForRegistration(t *testing.T) {
	f := newRecFixture(t, "n9") // not in the state
	if err := f.reconcile(); !errors.Is(err, errNotRegistered) {
		t.Errorf("reconcile before registration = %v, want errNotRegistered", err)
	}
	if len(f.srv.targets) != 0 {
		t.Errorf("targets added with an unknown portal group tag: %v", f.srv.targets)
	}
}

func TestPortalsListOwnersWithTheirTags(t *testing.T) {
	f := newRecFixture(t, "n1")
	// No LUN yet: every node that has not left.
	f.st.Nodes["n3"].Health = cluster.HealthLeft
	got := f.rec.portals(testIQN)
	want := []target.Portal{{Addr: "127.0.0.11:3260", TPGT: 1}, {Addr: "127.0.0.12:3260", TPGT: 2}}
	if !slices.Equal(got, want) {
		t.Errorf("portals without LUNs = %v, want %v", got, want)
	}
	f.st.Nodes["n3"].Health = cluster.HealthAlive
	addLUN(f.st, 0, 1<<20, "n3", "n3", "n1")
	addLUN(f.st, 1, 1<<20, "n2", "n2")
	got = f.rec.portals(strings.ToUpper(testIQN)) // iSCSI names compare case-insensitively
	want = []target.Portal{{Addr: "127.0.0.12:3260", TPGT: 2}, {Addr: "127.0.0.13:3260", TPGT: 3}}
	if !slices.Equal(got, want) {
		t.Errorf("portals = %v, want the owners n2 and n3: %v", got, want)
	}
	if got := f.rec.portals("iqn.2026-11.io.hatgt:unknown"); got != nil {
		t.Errorf("portals of an unknown target = %v, want nil", got)
	}
}

// A node's portal group tag is the one the state machine gave it when it
// registered: nodes joining (even with an ID that sorts first) or leaving
// renumber no other node. With tags taken from positions in the sorted
// node list, n3 went from 2 to 3 when n1 joined, dropping its sessions and
// moving its ALUA group and relative port under the initiators.
func TestPortalGroupTagsStayPut(t *testing.T) {
	fsm := cluster.NewFSM(nil)
	register := func(id string) {
		t.Helper()
		cmd, _ := cluster.NewCommand(cluster.CmdNodeRegister, cluster.NodeRegister{Node: cluster.NodeInfo{
			ID: id, APIAddr: "127.0.0.1:1", RaftAddr: "127.0.0.1:2", ISCSIPortal: "127.0.0.1:3260"}})
		if err := fsm.ApplyCommand(cmd); err != nil {
			t.Fatal(err)
		}
	}
	register("n2")
	register("n3")
	tag3 := portalGroupTag(fsm.State(), "n3")
	if tag3 == 0 || tag3 == portalGroupTag(fsm.State(), "n2") {
		t.Fatalf("tags n2 %d, n3 %d: want two different non-zero tags", portalGroupTag(fsm.State(), "n2"), tag3)
	}
	register("n1") // sorts before both
	if got := portalGroupTag(fsm.State(), "n3"); got != tag3 {
		t.Errorf("n3's tag moved from %d to %d when n1 joined", tag3, got)
	}
	cmd, _ := cluster.NewCommand(cluster.CmdNodeRemove, cluster.NodeRemove{ID: "n2"})
	if err := fsm.ApplyCommand(cmd); err != nil {
		t.Fatal(err)
	}
	if got := portalGroupTag(fsm.State(), "n3"); got != tag3 {
		t.Errorf("n3's tag moved from %d to %d when n2 left", tag3, got)
	}
	register("n4")
	st := fsm.State()
	seen := map[uint16]string{}
	for id := range st.Nodes {
		tag := portalGroupTag(st, id)
		if other, dup := seen[tag]; dup || tag == 0 {
			t.Errorf("node %s has tag %d (also %q)", id, tag, other)
		}
		seen[tag] = id
	}
	register("n3") // a restart re-registers: same tag
	if got := portalGroupTag(fsm.State(), "n3"); got != tag3 {
		t.Errorf("n3's tag moved from %d to %d at a re-registration", tag3, got)
	}
}
