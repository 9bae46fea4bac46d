package cluster

import (
	"errors"
	"slices"
	"testing"
)

// After "node remove" a LUN has fewer copies than its replicas; lun.add_copy
// places a new, out-of-sync copy on an alive node, and only there.
func TestFSMAddCopy(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, append(baseLog(t),
		mustCmd(t, CmdNodeRegister, NodeRegister{Node: node("n4")}),
		mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2", "n3")}),
		mustCmd(t, CmdNodeRemove, NodeRemove{ID: "n3"}),
		mustCmd(t, CmdNodeHealth, NodeHealth{ID: "n2", Health: HealthDead}),
	))
	l := f.State().Targets[iqnA].LUNs[0]
	if len(l.Placement) != 2 || l.Replicas != 3 {
		t.Fatalf("after node remove: placement %v, replicas %d", l.Placement, l.Replicas)
	}
	add := func(node string, epoch uint64) error {
		return f.ApplyCommand(mustCmd(t, CmdLUNAddCopy, LUNAddCopy{IQN: iqnA, LUN: 0, ID: l.ID, Epoch: epoch, Node: node}))
	}
	for _, tc := range []struct {
		node  string
		epoch uint64
		want  *Error
	}{
		{"n1", l.Epoch, ErrInvalid},        // already a copy
		{"n2", l.Epoch, ErrInvalid},        // already a copy (and dead)
		{"zz", l.Epoch, ErrUnknownNode},    // no such node
		{"n4", l.Epoch + 1, ErrStaleEpoch}, // epoch CAS
	} {
		if err := add(tc.node, tc.epoch); !errors.Is(err, tc.want) {
			t.Errorf("add %s at epoch %d: %v, want %s", tc.node, tc.epoch, err, tc.want.Code)
		}
	}
	if err := add("n4", l.Epoch); err != nil {
		t.Fatal(err)
	}
	l = f.State().Targets[iqnA].LUNs[0]
	if !slices.Equal(l.Placement, []string{"n1", "n2", "n4"}) || slices.Contains(l.InSync, "n4") {
		t.Fatalf("placement %v in sync %v: want n4 placed, out of sync", l.Placement, l.InSync)
	}
	if err := add("n4", l.Epoch); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a fourth copy of a 3-replica LUN: %v", err)
	}

	st := f.State()
	st.Targets[iqnA].LUNs[0].Placement = []string{"n1"}
	st.Nodes["n3"] = &NodeInfo{ID: "n3", Health: HealthAlive}
	if got := pickNewCopy(st, st.Targets[iqnA].LUNs[0], map[string]int{"n3": 5, "n4": 1}); got != "n4" {
		t.Fatalf("pickNewCopy chose %q, want n4 (alive, fewest copies)", got)
	}
}
