package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

const (
	iqnA = "iqn.2026-01.org.hatgt:a"
	iqnB = "iqn.2026-01.org.hatgt:b"
	ini1 = "iqn.1994-05.com.redhat:host1"
)

func mustCmd(t *testing.T, typ string, p any) Command {
	t.Helper()
	c, err := NewCommand(typ, p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func node(id string) NodeInfo {
	return NodeInfo{ID: id, APIAddr: "127.0.0.1:3270", RaftAddr: "127.0.0.1:3271", GossipAddr: "127.0.0.1:3272", ISCSIPortal: "127.0.0.1:3260"}
}

func lun(n uint64, placement ...string) LUN {
	return LUN{Target: iqnA, LUN: n, Size: 1 << 20, SectorSize: 512, IOMode: "wb", Backing: "fileio",
		Replicas: len(placement), Placement: placement, Owner: first(placement)}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// baseLog registers three nodes and a target.
func baseLog(t *testing.T) []Command {
	return []Command{
		mustCmd(t, CmdNodeRegister, NodeRegister{Node: node("n1")}),
		mustCmd(t, CmdNodeRegister, NodeRegister{Node: node("n2")}),
		mustCmd(t, CmdNodeRegister, NodeRegister{Node: node("n3")}),
		mustCmd(t, CmdTargetCreate, TargetCreate{IQN: iqnA, Alias: "a"}),
	}
}

func applyAll(t *testing.T, f *FSM, cmds []Command) {
	t.Helper()
	for i, c := range cmds {
		if r := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: c.Encode()}); r != nil {
			t.Fatalf("command %d (%s): %v", i, c.Type, r)
		}
	}
}

func TestFSMCommands(t *testing.T) {
	bad := func(m func(*LUN)) LUN { l := lun(1, "n1"); m(&l); return l }
	cases := []struct {
		name  string
		cmd   Command
		want  *Error // nil: success
		check func(t *testing.T, s *State)
	}{
		{"register updates addresses", mustCmd(t, CmdNodeRegister, NodeRegister{Node: NodeInfo{ID: "n1", APIAddr: "10.0.0.1:1", RaftAddr: "10.0.0.1:2"}}), nil,
			func(t *testing.T, s *State) {
				if s.Nodes["n1"].APIAddr != "10.0.0.1:1" || s.Nodes["n1"].Health != HealthAlive {
					t.Errorf("n1 = %+v", s.Nodes["n1"])
				}
			}},
		{"register bad id", mustCmd(t, CmdNodeRegister, NodeRegister{Node: NodeInfo{ID: "-x", APIAddr: "a:1", RaftAddr: "a:2"}}), ErrInvalid, nil},
		{"register bad address", mustCmd(t, CmdNodeRegister, NodeRegister{Node: NodeInfo{ID: "n9", APIAddr: "nope", RaftAddr: "a:2"}}), ErrInvalid, nil},
		{"health dead", mustCmd(t, CmdNodeHealth, NodeHealth{ID: "n2", Health: HealthDead}), nil,
			func(t *testing.T, s *State) {
				if s.Nodes["n2"].Health != HealthDead {
					t.Errorf("n2 health %q", s.Nodes["n2"].Health)
				}
			}},
		{"health unknown node", mustCmd(t, CmdNodeHealth, NodeHealth{ID: "zz", Health: HealthDead}), ErrUnknownNode, nil},
		{"health bad value", mustCmd(t, CmdNodeHealth, NodeHealth{ID: "n2", Health: "sleepy"}), ErrInvalid, nil},
		{"remove node", mustCmd(t, CmdNodeRemove, NodeRemove{ID: "n3"}), nil,
			func(t *testing.T, s *State) {
				if _, ok := s.Nodes["n3"]; ok {
					t.Error("n3 still there")
				}
			}},
		{"remove unknown node", mustCmd(t, CmdNodeRemove, NodeRemove{ID: "zz"}), ErrUnknownNode, nil},
		{"create target", mustCmd(t, CmdTargetCreate, TargetCreate{IQN: iqnB}), nil,
			func(t *testing.T, s *State) {
				if s.Targets[iqnB] == nil {
					t.Error("target missing")
				}
			}},
		{"duplicate target", mustCmd(t, CmdTargetCreate, TargetCreate{IQN: iqnA}), ErrTargetExists, nil},
		{"bad target name", mustCmd(t, CmdTargetCreate, TargetCreate{IQN: "target1"}), ErrInvalid, nil},
		{"delete target", mustCmd(t, CmdTargetDelete, TargetDelete{IQN: iqnA}), nil,
			func(t *testing.T, s *State) {
				if len(s.Targets) != 0 {
					t.Error("target still there")
				}
			}},
		{"delete unknown target", mustCmd(t, CmdTargetDelete, TargetDelete{IQN: iqnB}), ErrUnknownTarget, nil},
		{"create LUN", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n2", "n1")}), nil,
			func(t *testing.T, s *State) {
				l := s.Targets[iqnA].LUNs[0]
				if l == nil || l.Owner != "n2" || l.Epoch != 1 || strings.Join(l.InSync, ",") != "n2,n1" {
					t.Errorf("LUN = %+v", l)
				}
			}},
		{"LUN unknown target", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: func() LUN { l := lun(0, "n1"); l.Target = iqnB; return l }()}), ErrUnknownTarget, nil},
		{"LUN zero size", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: bad(func(l *LUN) { l.Size = 0 })}), ErrBadSize, nil},
		{"LUN size not sector multiple", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: bad(func(l *LUN) { l.SectorSize = 4096; l.Size = 4096*3 + 512 })}), ErrBadSize, nil},
		{"LUN bad sector", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: bad(func(l *LUN) { l.SectorSize = 1024 })}), ErrBadSize, nil},
		{"LUN bad io mode", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: bad(func(l *LUN) { l.IOMode = "fast" })}), ErrInvalid, nil},
		{"LUN bad backing", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: bad(func(l *LUN) { l.Backing = "nullio" })}), ErrInvalid, nil},
		{"LUN blockio without path", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: bad(func(l *LUN) { l.Backing = "blockio" })}), ErrInvalid, nil},
		{"LUN number too big", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: bad(func(l *LUN) { l.LUN = MaxLUN + 1 })}), ErrInvalid, nil},
		{"LUN unknown node", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(1, "n7")}), ErrUnknownNode, nil},
		{"LUN node twice", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(1, "n1", "n1")}), ErrInvalid, nil},
		{"LUN owner not placed", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: bad(func(l *LUN) { l.Owner = "n2" })}), ErrInvalid, nil},
		{"LUN placement/replicas mismatch", mustCmd(t, CmdLUNCreate, LUNCreate{LUN: bad(func(l *LUN) { l.Replicas = 2 })}), ErrInvalid, nil},
		{"in-sync unknown LUN", mustCmd(t, CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 9, Epoch: 1, Node: "n1"}), ErrUnknownLUN, nil},
		{"owner unknown target", mustCmd(t, CmdLUNSetOwner, LUNSetOwner{IQN: iqnB, LUN: 0, Owner: "n1", Epoch: 1}), ErrUnknownTarget, nil},
		{"ACL add", mustCmd(t, CmdACLAdd, ACLChange{IQN: iqnA, Initiator: ini1}), nil,
			func(t *testing.T, s *State) {
				if strings.Join(s.Targets[iqnA].ACL, ",") != ini1 {
					t.Errorf("ACL = %v", s.Targets[iqnA].ACL)
				}
			}},
		{"ACL remove absent", mustCmd(t, CmdACLRemove, ACLChange{IQN: iqnA, Initiator: ini1}), ErrUnknownACL, nil},
		{"ACL bad initiator", mustCmd(t, CmdACLAdd, ACLChange{IQN: iqnA, Initiator: "host 1"}), ErrInvalid, nil},
		{"ACL unknown target", mustCmd(t, CmdACLAdd, ACLChange{IQN: iqnB, Initiator: ini1}), ErrUnknownTarget, nil},
		{"CHAP set", mustCmd(t, CmdCHAPSet, CHAPSet{IQN: iqnA, CHAP: CHAP{User: "u", Secret: "0123456789ab"}}), nil,
			func(t *testing.T, s *State) {
				if c := s.Targets[iqnA].CHAP; c == nil || c.User != "u" {
					t.Errorf("CHAP = %+v", c)
				}
			}},
		{"CHAP short secret", mustCmd(t, CmdCHAPSet, CHAPSet{IQN: iqnA, CHAP: CHAP{User: "u", Secret: "short"}}), ErrInvalid, nil},
		{"CHAP mutual same secret", mustCmd(t, CmdCHAPSet, CHAPSet{IQN: iqnA, CHAP: CHAP{User: "u", Secret: "0123456789ab", MutualUser: "t", MutualSecret: "0123456789ab"}}), ErrInvalid, nil},
		{"CHAP mutual half", mustCmd(t, CmdCHAPSet, CHAPSet{IQN: iqnA, CHAP: CHAP{User: "u", Secret: "0123456789ab", MutualUser: "t"}}), ErrInvalid, nil},
		{"CHAP clear", mustCmd(t, CmdCHAPClear, CHAPClear{IQN: iqnA}), nil, nil},
		{"CHAP clear unknown target", mustCmd(t, CmdCHAPClear, CHAPClear{IQN: iqnB}), ErrUnknownTarget, nil},
		{"unknown type", Command{Type: "lun.teleport", Version: 1, Payload: []byte(`{}`)}, ErrUnknownCommand, nil},
		{"future version", Command{Type: CmdTargetCreate, Version: 99, Payload: []byte(`{"iqn":"` + iqnB + `"}`)}, ErrUnsupportedVersion, nil},
		{"bad payload", Command{Type: CmdTargetCreate, Version: 1, Payload: []byte(`[1,2]`)}, ErrBadCommand, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFSM(nil)
			applyAll(t, f, baseLog(t))
			before := snapshotBytes(t, f)
			r := f.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: tc.cmd.Encode()})
			if tc.want == nil {
				if r != nil {
					t.Fatalf("got %v, want success", r)
				}
				if tc.check != nil {
					tc.check(t, f.State())
				}
				return
			}
			err, ok := r.(error)
			if !ok || !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %s", r, tc.want.Code)
			}
			if after := snapshotBytes(t, f); !bytes.Equal(before, after) {
				t.Errorf("refused command changed the state:\n%s\n%s", before, after)
			}
		})
	}
}

func TestFSMRawGarbage(t *testing.T) {
	f := NewFSM(nil)
	for _, data := range [][]byte{nil, []byte("{"), []byte(`"x"`), []byte(`{"type":1}`)} {
		r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
		if err, ok := r.(error); !ok || !errors.Is(err, ErrBadCommand) && !errors.Is(err, ErrUnknownCommand) {
			t.Errorf("Apply(%q) = %v", data, r)
		}
	}
}

func TestFSMLUNLifecycle(t *testing.T) {
	f := NewFSM(nil)
	log := append(baseLog(t),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2")}),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(1, "n2", "n3")}),
	)
	applyAll(t, f, log)
	if err := f.ApplyCommand(mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n3")})); !errors.Is(err, ErrLUNExists) {
		t.Errorf("duplicate LUN: %v", err)
	}
	if err := f.ApplyCommand(mustCmd(t, CmdTargetDelete, TargetDelete{IQN: iqnA})); !errors.Is(err, ErrTargetHasLUNs) {
		t.Errorf("delete busy target: %v", err)
	}
	// Owner change: compare-and-set on the epoch, only to an in-sync node.
	if err := f.ApplyCommand(mustCmd(t, CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 0, Owner: "n2", Epoch: 7})); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("stale epoch: %v", err)
	}
	if err := f.ApplyCommand(mustCmd(t, CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 0, Owner: "n3", Epoch: 1})); !errors.Is(err, ErrInvalid) {
		t.Errorf("owner outside in-sync set: %v", err)
	}
	if err := f.ApplyCommand(mustCmd(t, CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 0, Owner: "n2", Epoch: 1})); err != nil {
		t.Fatal(err)
	}
	if l := f.State().Targets[iqnA].LUNs[0]; l.Owner != "n2" || l.Epoch != 2 {
		t.Errorf("after set_owner: %+v", l)
	}
	// In-sync set: compare-and-set on the epoch, owner stays, only placed
	// nodes, placement order kept.
	inSync := func(node string, in bool, epoch uint64) error {
		return f.ApplyCommand(mustCmd(t, CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 0, Epoch: epoch, Node: node, InSync: in}))
	}
	if err := inSync("n1", false, 1); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("in-sync change at old epoch: %v", err)
	}
	if err := inSync("n1", false, 2); err != nil {
		t.Fatal(err)
	}
	if got := f.State().Targets[iqnA].LUNs[0].InSync; strings.Join(got, ",") != "n2" {
		t.Errorf("in-sync after removing n1: %v", got)
	}
	if err := inSync("n2", false, 2); !errors.Is(err, ErrInvalid) {
		t.Errorf("owner leaving the in-sync set: %v", err)
	}
	if err := inSync("n3", true, 2); !errors.Is(err, ErrInvalid) {
		t.Errorf("unplaced node joining the in-sync set: %v", err)
	}
	if err := f.ApplyCommand(mustCmd(t, CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 0, Owner: "n1", Epoch: 2})); !errors.Is(err, ErrInvalid) {
		t.Errorf("ownership to an out-of-sync copy: %v", err)
	}
	if err := inSync("n1", true, 2); err != nil {
		t.Fatal(err)
	}
	if got := f.State().Targets[iqnA].LUNs[0].InSync; strings.Join(got, ",") != "n1,n2" {
		t.Errorf("in-sync after n1 rejoined: %v", got)
	}
	// Removing the owner of LUN 1 moves it to its other in-sync copy.
	if err := f.ApplyCommand(mustCmd(t, CmdNodeRemove, NodeRemove{ID: "n2"})); err != nil {
		t.Fatal(err)
	}
	s := f.State()
	l0, l1 := s.Targets[iqnA].LUNs[0], s.Targets[iqnA].LUNs[1]
	if l0.Owner != "n1" || l0.Epoch != 3 || strings.Join(l0.Placement, ",") != "n1" {
		t.Errorf("LUN 0 after removing n2: %+v", l0)
	}
	if l1.Owner != "n3" || l1.Epoch != 2 || strings.Join(l1.InSync, ",") != "n3" {
		t.Errorf("LUN 1 after removing n2: %+v", l1)
	}
	if err := f.ApplyCommand(mustCmd(t, CmdLUNDelete, LUNDelete{IQN: iqnA, LUN: 5})); !errors.Is(err, ErrUnknownLUN) {
		t.Errorf("delete unknown LUN: %v", err)
	}
	for _, n := range []uint64{0, 1} {
		if err := f.ApplyCommand(mustCmd(t, CmdLUNDelete, LUNDelete{IQN: iqnA, LUN: n})); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.ApplyCommand(mustCmd(t, CmdTargetDelete, TargetDelete{IQN: iqnA})); err != nil {
		t.Errorf("delete emptied target: %v", err)
	}
}

// TestFSMLUNIDsAreNeverReused: a LUN deleted and created again under the same
// target and number gets a new ID, so nodes give it a new backing file and
// never serve the old LUN's data.
func TestFSMLUNIDsAreNeverReused(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, append(baseLog(t), mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1")})))
	first := f.State().Targets[iqnA].LUNs[0].ID
	if err := f.ApplyCommand(mustCmd(t, CmdLUNDelete, LUNDelete{IQN: iqnA, LUN: 0})); err != nil {
		t.Fatal(err)
	}
	if err := f.ApplyCommand(mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1")})); err != nil {
		t.Fatal(err)
	}
	again := f.State().Targets[iqnA].LUNs[0].ID
	if first == 0 || again == first {
		t.Fatalf("LUN IDs %d then %d: want distinct and non-zero", first, again)
	}
	if a, b := DefaultBackingPath("/d", iqnA, 0, first), DefaultBackingPath("/d", iqnA, 0, again); a == b {
		t.Fatalf("both LUNs get backing file %s", a)
	}
	// The counter survives a snapshot round trip (State.Clone).
	if got := f.State().LastLUNID; got != again {
		t.Fatalf("LastLUNID after clone = %d, want %d", got, again)
	}
}

func TestPlace(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, append(baseLog(t),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2")}),
		mustCmd(t, CmdNodeHealth, NodeHealth{ID: "n2", Health: HealthDead}),
	))
	s := f.State()
	got, err := s.Place(2)
	if err != nil {
		t.Fatal(err)
	}
	// n3 has no copy, n1 has one, n2 is dead.
	if strings.Join(got, ",") != "n3,n1" {
		t.Errorf("Place(2) = %v, want n3,n1", got)
	}
	if _, err := s.Place(3); !errors.Is(err, ErrNotEnoughNodes) {
		t.Errorf("Place(3) with 2 alive: %v", err)
	}
	if _, err := s.Place(0); !errors.Is(err, ErrInvalid) {
		t.Errorf("Place(0): %v", err)
	}
}

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

type memSink struct{ bytes.Buffer }

func (*memSink) ID() string    { return "mem" }
func (*memSink) Cancel() error { return nil }
func (*memSink) Close() error  { return nil }

// fullLog exercises every kind of object, secrets included.
func fullLog(t *testing.T) []Command {
	return append(baseLog(t),
		mustCmd(t, CmdTargetCreate, TargetCreate{IQN: iqnB}),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2")}),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(3, "n3")}),
		mustCmd(t, CmdACLAdd, ACLChange{IQN: iqnA, Initiator: ini1}),
		mustCmd(t, CmdACLAdd, ACLChange{IQN: iqnA, Initiator: "iqn.1993-08.org.debian:01:abc"}),
		mustCmd(t, CmdCHAPSet, CHAPSet{IQN: iqnA, CHAP: CHAP{User: "u", Secret: "very-secret-1", MutualUser: "t", MutualSecret: "very-secret-2"}}),
		mustCmd(t, CmdNodeHealth, NodeHealth{ID: "n3", Health: HealthDead}),
		mustCmd(t, CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 0, Epoch: 1, Node: "n2"}),
		mustCmd(t, CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 3, Owner: "n3", Epoch: 1}),
		mustCmd(t, CmdLUNSetProgress, LUNSetProgress{IQN: iqnA, LUN: 0, Epoch: 1, Node: "n2",
			RegionsTotal: 10, RegionsDone: 4, BytesCopied: 4 << 20, RateBps: 1.5e6, ETAMillis: 4000}),
		mustCmd(t, CmdLUNSetReservations, LUNSetReservations{IQN: iqnA, LUN: 0, ID: 1, Origin: "n2/1",
			State: json.RawMessage(`{"generation":1,"registrations":[{"initiator":"iqn.1994-05.com.redhat:host1","key":10}]}`)}),
	)
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, fullLog(t))
	snap := snapshotBytes(t, f)

	g := NewFSM(nil)
	// Restore must replace, not merge: give g state that is not in snap.
	applyAll(t, g, []Command{mustCmd(t, CmdNodeRegister, NodeRegister{Node: node("stale")})})
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.State().Nodes["stale"]; ok {
		t.Error("Restore kept state that was not in the snapshot")
	}
	if again := snapshotBytes(t, g); !bytes.Equal(snap, again) {
		t.Errorf("round trip differs:\n%s\n%s", snap, again)
	}
	if c := g.State().Targets[iqnA].CHAP; c == nil || c.MutualSecret != "very-secret-2" {
		t.Errorf("CHAP lost in round trip: %+v", c)
	}
	if p := g.State().Targets[iqnA].LUNs[0].Resync["n2"]; p == nil || *p != (ResyncProgress{Epoch: 1, RegionsTotal: 10, RegionsDone: 4, BytesCopied: 4 << 20, RateBps: 1.5e6, ETAMillis: 4000}) {
		t.Errorf("resync progress lost in round trip: %+v", p)
	}
	if l := g.State().Targets[iqnA].LUNs[0]; l.ReservationsVersion != 1 || !strings.Contains(string(l.Reservations), `"key":10`) {
		t.Errorf("reservations lost in round trip: version %d, %s", l.ReservationsVersion, l.Reservations)
	}
	if err := g.Restore(io.NopCloser(strings.NewReader(`{"format":42}`))); err == nil {
		t.Error("Restore accepted an unknown format")
	}
	if err := g.Restore(io.NopCloser(strings.NewReader(`not json`))); err == nil {
		t.Error("Restore accepted garbage")
	}
}

func TestDeterminism(t *testing.T) {
	log := fullLog(t)
	// Refused commands are part of the log too.
	log = append(log, mustCmd(t, CmdTargetCreate, TargetCreate{IQN: iqnA}), mustCmd(t, CmdNodeRemove, NodeRemove{ID: "n2"}))
	a, b := NewFSM(nil), NewFSM(nil)
	for i, c := range log {
		l := &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: c.Encode()}
		ra, rb := a.Apply(l), b.Apply(l)
		if (ra == nil) != (rb == nil) {
			t.Fatalf("entry %d: results differ: %v vs %v", i, ra, rb)
		}
	}
	sa, sb := snapshotBytes(t, a), snapshotBytes(t, b)
	if !bytes.Equal(sa, sb) {
		t.Fatalf("same log, different states:\n%s\n%s", sa, sb)
	}
	var st State
	if err := json.Unmarshal(sa, &st); err != nil || len(st.Nodes) != 2 {
		t.Errorf("unexpected final state (%v): %s", err, sa)
	}
}

func TestRedactAndDesired(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, fullLog(t))
	d := DesiredFor(f.State(), "n2", "/data", 9)
	if len(d.Targets) != 2 || len(d.Targets[0].LUNs) != 1 || d.Targets[0].LUNs[0].Owned || d.Targets[0].LUNs[0].LUN.LUN != 0 {
		t.Errorf("desired for n2: %+v", d)
	}
	if p := d.Targets[0].LUNs[0].BackingPath; p != "/data/luns/"+iqnA+"/lun0-1.img" { // the first LUN created: ID 1
		t.Errorf("default backing path %q", p)
	}
	if d.Targets[0].CHAP == nil || d.Targets[0].CHAP.Secret != "very-secret-1" {
		t.Error("desired state must carry the CHAP secret the node needs")
	}
	red := f.State().Redact()
	b, _ := json.Marshal(red)
	if bytes.Contains(b, []byte("very-secret")) {
		t.Errorf("redacted state holds a secret: %s", b)
	}
}

// FuzzFSMApply feeds arbitrary log entries to a populated FSM: Apply must
// not panic, and an entry it refuses must leave the state as it was.
func FuzzFSMApply(f *testing.F) {
	t := &testing.T{}
	for _, c := range fullLog(t) {
		f.Add(c.Encode())
	}
	f.Add([]byte(`{"type":"lun.create","version":1,"payload":null}`))
	f.Add([]byte(`{"type":"lun.create","version":1,"payload":{"lun":{"target":"iqn.2026-01.org.hatgt:a","lun":9,"size":512,"sector_size":512,"io_mode":"ro","backing":"fileio","replicas":1,"placement":["n1"],"owner":"n1"}}}`))
	f.Add([]byte(`{"type":"node.remove","version":1,"payload":{"id":"n1"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := NewFSM(nil)
		applyAll(t, fsm, fullLog(t))
		before := snapshotBytes(t, fsm)
		r := fsm.Apply(&raft.Log{Index: 1000, Type: raft.LogCommand, Data: data})
		if r == nil {
			// Accepted: the state must still round-trip through a snapshot.
			g := NewFSM(nil)
			snap := snapshotBytes(t, fsm)
			if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
				t.Fatalf("accepted entry leaves an unrestorable state: %v", err)
			}
			return
		}
		var e *Error
		if err, ok := r.(error); !ok || !errors.As(err, &e) {
			t.Fatalf("Apply returned %T %v, want nil or *Error", r, r)
		}
		if after := snapshotBytes(t, fsm); !bytes.Equal(before, after) {
			t.Fatalf("refused entry changed the state")
		}
	})
}

func TestFSMSetProgress(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, append(baseLog(t), mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2")})))
	id := f.State().Targets[iqnA].LUNs[0].ID
	prog := func(m func(*LUNSetProgress)) error {
		p := LUNSetProgress{IQN: iqnA, LUN: 0, ID: id, Epoch: 1, Node: "n2", RegionsTotal: 8, RegionsDone: 2, BytesCopied: 2 << 20, RateBps: 1e6, ETAMillis: 6000}
		m(&p)
		return f.ApplyCommand(mustCmd(t, CmdLUNSetProgress, p))
	}
	before := snapshotBytes(t, f)
	refused := []struct {
		name string
		m    func(*LUNSetProgress)
		want *Error
	}{
		{"stale epoch", func(p *LUNSetProgress) { p.Epoch = 0 }, ErrStaleEpoch},
		{"future epoch", func(p *LUNSetProgress) { p.Epoch = 2 }, ErrStaleEpoch},
		{"node without a copy", func(p *LUNSetProgress) { p.Node = "n3" }, ErrInvalid},
		{"unknown node", func(p *LUNSetProgress) { p.Node = "zz" }, ErrInvalid},
		{"unknown LUN", func(p *LUNSetProgress) { p.LUN = 7 }, ErrUnknownLUN},
		{"unknown target", func(p *LUNSetProgress) { p.IQN = iqnB }, ErrUnknownTarget},
		{"other LUN ID", func(p *LUNSetProgress) { p.ID = id + 1 }, ErrUnknownLUN},
		{"negative bytes", func(p *LUNSetProgress) { p.BytesCopied = -1 }, ErrInvalid},
		{"done beyond total", func(p *LUNSetProgress) { p.RegionsDone = 9 }, ErrInvalid},
		{"negative rate", func(p *LUNSetProgress) { p.RateBps = -1 }, ErrInvalid},
	}
	for _, tc := range refused {
		if err := prog(tc.m); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want.Code)
		}
	}
	if after := snapshotBytes(t, f); !bytes.Equal(before, after) {
		t.Fatalf("refused progress changed the state:\n%s\n%s", before, after)
	}

	if err := prog(func(p *LUNSetProgress) { p.ID = 0 }); err != nil { // ID 0: not checked
		t.Fatal(err)
	}
	want := ResyncProgress{Epoch: 1, RegionsTotal: 8, RegionsDone: 2, BytesCopied: 2 << 20, RateBps: 1e6, ETAMillis: 6000}
	s := f.State()
	if got := s.Targets[iqnA].LUNs[0].Resync["n2"]; got == nil || *got != want {
		t.Fatalf("recorded %+v, want %+v", got, want)
	}
	// The copy is deep: changing it leaves the FSM's state alone.
	s.Targets[iqnA].LUNs[0].Resync["n2"].RegionsDone = 99
	s.Targets[iqnA].LUNs[0].Resync["n1"] = &ResyncProgress{}
	if got := f.State().Targets[iqnA].LUNs[0].Resync; len(got) != 1 || got["n2"].RegionsDone != 2 {
		t.Fatalf("State() shares the resync map: %+v", got)
	}

	// A Done report, then the copy rejoins: the record stays, to tell how
	// much the last resync copied.
	if err := prog(func(p *LUNSetProgress) { p.RegionsDone, p.BytesCopied, p.Done = 8, 8<<20, true }); err != nil {
		t.Fatal(err)
	}
	if err := f.ApplyCommand(mustCmd(t, CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 0, ID: id, Epoch: 1, Node: "n2", InSync: true})); err != nil {
		t.Fatal(err)
	}
	if got := f.State().Targets[iqnA].LUNs[0].Resync["n2"]; got == nil || !got.Done || got.BytesCopied != 8<<20 {
		t.Fatalf("after rejoining: %+v", got)
	}
	// set_in_sync checks the LUN ID too.
	if err := f.ApplyCommand(mustCmd(t, CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 0, ID: id + 1, Epoch: 1, Node: "n2"})); !errors.Is(err, ErrUnknownLUN) {
		t.Fatalf("set_in_sync for another LUN ID: %v", err)
	}
	// A node that leaves the placement takes its record along.
	if err := f.ApplyCommand(mustCmd(t, CmdNodeRemove, NodeRemove{ID: "n2"})); err != nil {
		t.Fatal(err)
	}
	if got := f.State().Targets[iqnA].LUNs[0].Resync; got != nil {
		t.Fatalf("record of a removed node kept: %+v", got)
	}
}

func TestFSMSubscribe(t *testing.T) {
	f := NewFSM(nil)
	ch, cancel := f.Subscribe()
	ch2, cancel2 := f.Subscribe()
	defer cancel2()
	signalled := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	applyAll(t, f, baseLog(t))
	if !signalled(ch) || !signalled(ch2) {
		t.Fatal("no signal after applied commands")
	}
	if signalled(ch) {
		t.Fatal("signals are not coalesced into one")
	}
	if err := f.ApplyCommand(mustCmd(t, CmdTargetCreate, TargetCreate{IQN: iqnA})); err == nil {
		t.Fatal("duplicate target accepted")
	}
	if signalled(ch) {
		t.Fatal("signal after a refused command")
	}
	snap := snapshotBytes(t, f)
	if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if !signalled(ch) {
		t.Fatal("no signal after Restore")
	}
	cancel()
	cancel() // twice is fine
	signalled(ch2)
	applyAll(t, f, []Command{mustCmd(t, CmdTargetCreate, TargetCreate{IQN: iqnB})})
	if signalled(ch) {
		t.Fatal("signal after cancel")
	}
	if !signalled(ch2) {
		t.Fatal("the other subscriber lost its signal")
	}
	// Changed keeps working for the reconcile loop.
	if !signalled(f.Changed()) {
		t.Fatal("Changed not signalled")
	}
}

func TestLUNByID(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, append(baseLog(t),
		mustCmd(t, CmdTargetCreate, TargetCreate{IQN: iqnB}),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1")}),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: func() LUN { l := lun(5, "n2"); l.Target = iqnB; return l }()}),
	))
	s := f.State()
	tg, l := s.LUNByID(2)
	if tg == nil || l == nil || tg.IQN != iqnB || l.LUN != 5 || l.ID != 2 {
		t.Fatalf("LUNByID(2) = %+v, %+v", tg, l)
	}
	for _, id := range []uint64{0, 3, 1 << 63} {
		if tg, l := s.LUNByID(id); tg != nil || l != nil {
			t.Errorf("LUNByID(%d) = %+v, %+v, want nil, nil", id, tg, l)
		}
	}
	if iqn, l, ok := f.LUNByID(1); !ok || iqn != iqnA || l.LUN != 0 {
		t.Errorf("FSM.LUNByID(1) = %q, %+v, %v", iqn, l, ok)
	}
}

func TestDecodeStateDropsNulls(t *testing.T) {
	in := `{"format":1,"nodes":{"n1":null},"targets":{"` + iqnA + `":{"iqn":"` + iqnA + `","luns":{"0":{"lun":0,"resync":{"n1":null}},"1":null}},"` + iqnB + `":null}}`
	s, err := DecodeState(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Nodes) != 0 || len(s.Targets) != 1 || len(s.Targets[iqnA].LUNs) != 1 || len(s.Targets[iqnA].LUNs[0].Resync) != 0 {
		t.Fatalf("nulls kept: %+v", s)
	}
	s.Clone() // must not panic
}

// TestLUNStatusCopies builds one LUN with a copy in each state, from
// commands applied to the FSM.
func TestLUNStatusCopies(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, append(baseLog(t),
		mustCmd(t, CmdNodeRegister, NodeRegister{Node: node("n4")}),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2", "n3", "n4")}),
	))
	apply := func(typ string, p any) {
		t.Helper()
		if err := f.ApplyCommand(mustCmd(t, typ, p)); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
	}
	progress := func(node string, epoch uint64, total, done, bytes int64, fin bool) {
		t.Helper()
		apply(CmdLUNSetProgress, LUNSetProgress{IQN: iqnA, LUN: 0, Epoch: epoch, Node: node, RegionsTotal: total,
			RegionsDone: done, BytesCopied: bytes, RateBps: 2e6, ETAMillis: 1500, Done: fin})
	}
	for _, n := range []string{"n2", "n3", "n4"} {
		apply(CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 0, Epoch: 1, Node: n, InSync: false})
	}
	// n3 had a resync under epoch 1 that never finished; then n2 took over.
	progress("n3", 1, 10, 5, 5<<20, false)
	apply(CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 0, Epoch: 1, Node: "n2", InSync: true})
	apply(CmdLUNSetOwner, LUNSetOwner{IQN: iqnA, LUN: 0, Owner: "n2", Epoch: 1})
	// Epoch 2: n1 is resyncing, n4 is resyncing but its node is dead.
	apply(CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 0, Epoch: 2, Node: "n1", InSync: false})
	progress("n1", 2, 4, 1, 1<<20, false)
	progress("n4", 2, 4, 3, 3<<20, false)
	apply(CmdNodeHealth, NodeHealth{ID: "n4", Health: HealthDead})

	s := f.State()
	ls := s.LUNStatus(s.Targets[iqnA].LUNs[0])
	want := []CopyStatus{
		{Node: "n1", State: CopyResyncing, ResyncPercent: 25, BytesCopied: 1 << 20, RateBps: 2e6, ETASeconds: 1.5},
		{Node: "n2", State: CopyInSync, Owner: true, ResyncPercent: 100},
		{Node: "n3", State: CopyOutOfSync, ResyncPercent: 0, BytesCopied: 5 << 20}, // epoch 1's run: bytes kept, no percent
		{Node: "n4", State: CopyOffline, ResyncPercent: 75, BytesCopied: 3 << 20},
	}
	// No node reported its copy (report_test.go has those).
	for i := range want {
		want[i].Service = ServiceUnknown
	}
	want[3].Service = ServiceOffline
	if len(ls.Copies) != len(want) {
		t.Fatalf("copies = %+v", ls.Copies)
	}
	for i := range want {
		if ls.Copies[i] != want[i] {
			t.Errorf("copy %d = %+v, want %+v", i, ls.Copies[i], want[i])
		}
	}

	// n1's run finishes and it rejoins: in sync, and the bytes it took
	// stay visible. A finished run of n3 in this epoch makes it
	// out-of-sync at 100%, not resyncing.
	progress("n1", 2, 4, 4, 4<<20, true)
	progress("n3", 2, 2, 2, 2<<20, true)
	apply(CmdLUNSetInSync, LUNSetInSync{IQN: iqnA, LUN: 0, Epoch: 2, Node: "n1", InSync: true})
	s = f.State()
	ls = s.LUNStatus(s.Targets[iqnA].LUNs[0])
	if c := ls.Copies[0]; c.State != CopyInSync || c.ResyncPercent != 100 || c.BytesCopied != 4<<20 || c.RateBps != 0 {
		t.Errorf("n1 after rejoining: %+v", c)
	}
	if c := ls.Copies[2]; c.State != CopyOutOfSync || c.ResyncPercent != 100 || c.BytesCopied != 2<<20 {
		t.Errorf("n3 after a finished run: %+v", c)
	}

	// The JSON keeps the LUN's fields flat, next to "copies".
	b, err := json.Marshal(TargetStatus{IQN: iqnA, LUNs: []LUNStatus{ls}})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		LUNs []map[string]json.RawMessage `json:"luns"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"lun", "owner", "epoch", "in_sync", "placement", "copies"} {
		if _, ok := doc.LUNs[0][k]; !ok {
			t.Errorf("status JSON lacks %q: %s", k, b)
		}
	}
	if !bytes.Contains(b, []byte(`"state":"resyncing"`)) && !bytes.Contains(b, []byte(`"state":"offline"`)) {
		t.Errorf("status JSON lacks copy states: %s", b)
	}
}

// A snapshot written before nodes had portal group tags gets them on
// restore: the positions the nodes reported then (so running sessions keep
// their tags across the upgrade), and LastTag above them.
func TestRestoreAssignsTagsOfOldSnapshots(t *testing.T) {
	old := `{"format":1,"nodes":{"b":{"id":"b","api_addr":"127.0.0.1:1","iscsi_portal":"","raft_addr":"127.0.0.1:2","gossip_addr":"","health":"alive"},` +
		`"a":{"id":"a","api_addr":"127.0.0.1:3","iscsi_portal":"","raft_addr":"127.0.0.1:4","gossip_addr":"","health":"alive"},` +
		`"c":{"id":"c","api_addr":"127.0.0.1:5","iscsi_portal":"","raft_addr":"127.0.0.1:6","gossip_addr":"","health":"dead","tag":7}},"targets":{}}`
	f := NewFSM(nil)
	if err := f.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	st := f.State()
	// c kept its tag 7; a and b would have been 1 and 2, but LastTag is 7:
	// tags only ever grow, so they get 8 and 9 in ID order.
	if st.Nodes["c"].Tag != 7 || st.Nodes["a"].Tag != 8 || st.Nodes["b"].Tag != 9 || st.LastTag != 9 {
		t.Errorf("tags a=%d b=%d c=%d last=%d; want 8, 9, 7, 9", st.Nodes["a"].Tag, st.Nodes["b"].Tag, st.Nodes["c"].Tag, st.LastTag)
	}
	untagged := strings.ReplaceAll(old, `,"tag":7`, "")
	if err := f.Restore(io.NopCloser(strings.NewReader(untagged))); err != nil {
		t.Fatal(err)
	}
	st = f.State()
	if st.Nodes["a"].Tag != 1 || st.Nodes["b"].Tag != 2 || st.Nodes["c"].Tag != 3 || st.LastTag != 3 {
		t.Errorf("tags a=%d b=%d c=%d last=%d; want the old positions 1, 2, 3", st.Nodes["a"].Tag, st.Nodes["b"].Tag, st.Nodes["c"].Tag, st.LastTag)
	}
}
