package cluster

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// lun.set_reservations is a compare and set on the LUN's reservation
// version, for the LUN's current ID only; every node's hooks hear of each
// applied change in commit order, and of nothing refused.
func TestSetReservations(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, append(baseLog(t), mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2")})))
	id := f.State().Targets[iqnA].LUNs[0].ID
	var heard []ReservationsChange
	cancel := f.OnReservations(func(c ReservationsChange) { heard = append(heard, c) })
	idx := uint64(100)
	apply := func(p LUNSetReservations) error {
		idx++
		if r := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: mustCmd(t, CmdLUNSetReservations, p).Encode()}); r != nil {
			return r.(error)
		}
		return nil
	}
	state := func(gen int) json.RawMessage {
		return json.RawMessage(`{"generation":` + string(rune('0'+gen)) + `}`)
	}

	if err := apply(LUNSetReservations{IQN: iqnA, LUN: 0, ID: id, Version: 0, Origin: "n1/1", State: state(1)}); err != nil {
		t.Fatal(err)
	}
	// Computed from version 0 too, by another node: refused.
	if err := apply(LUNSetReservations{IQN: iqnA, LUN: 0, ID: id, Version: 0, Origin: "n2/1", State: state(2)}); !errors.Is(err, ErrStaleReservations) {
		t.Fatalf("a change computed from an old version: %v, want %v", err, ErrStaleReservations)
	}
	if err := apply(LUNSetReservations{IQN: iqnA, LUN: 0, ID: id, Version: 1, Origin: "n2/2", State: state(2)}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		p    LUNSetReservations
		want *Error
	}{
		{LUNSetReservations{IQN: iqnA, LUN: 0, ID: id + 1, Version: 2, State: state(3)}, ErrUnknownLUN},
		{LUNSetReservations{IQN: iqnA, LUN: 0, Version: 2, State: state(3)}, ErrUnknownLUN},
		{LUNSetReservations{IQN: iqnA, LUN: 7, ID: id, Version: 2, State: state(3)}, ErrUnknownLUN},
		{LUNSetReservations{IQN: iqnB, LUN: 0, ID: id, Version: 2, State: state(3)}, ErrUnknownTarget},
		{LUNSetReservations{IQN: iqnA, LUN: 0, ID: id, Version: 2, State: json.RawMessage(`[1]`)}, ErrInvalid},
		{LUNSetReservations{IQN: iqnA, LUN: 0, ID: id, Version: 2, State: json.RawMessage(`{"a":"` + strings.Repeat("x", maxReservationsState) + `"}`)}, ErrInvalid},
	} {
		if err := apply(bad.p); !errors.Is(err, bad.want) {
			t.Errorf("%+v: %v, want %v", bad.p.ID, err, bad.want)
		}
	}
	l := f.State().Targets[iqnA].LUNs[0]
	if l.ReservationsVersion != 2 || string(l.Reservations) != string(state(2)) {
		t.Fatalf("LUN 0: version %d, %s", l.ReservationsVersion, l.Reservations)
	}
	if len(heard) != 2 || heard[0].Version != 1 || heard[0].Origin != "n1/1" || heard[1].Version != 2 || heard[1].Origin != "n2/2" ||
		string(heard[1].State) != string(state(2)) || heard[1].ID != id || heard[1].IQN != iqnA {
		t.Fatalf("hooks heard %+v", heard)
	}
	cancel()
	if err := apply(LUNSetReservations{IQN: iqnA, LUN: 0, ID: id, Version: 2, Origin: "n1/2", State: state(3)}); err != nil {
		t.Fatal(err)
	}
	if len(heard) != 2 {
		t.Errorf("a cancelled hook heard %+v", heard[2:])
	}
	// A LUN deleted and created again starts without reservations.
	applyAll2 := func(cmds ...Command) {
		for _, c := range cmds {
			idx++
			if r := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: c.Encode()}); r != nil {
				t.Fatal(r)
			}
		}
	}
	applyAll2(mustCmd(t, CmdLUNDelete, LUNDelete{IQN: iqnA, LUN: 0}), mustCmd(t, CmdLUNCreate, LUNCreate{LUN: lun(0, "n1", "n2")}))
	if l := f.State().Targets[iqnA].LUNs[0]; l.ReservationsVersion != 0 || l.Reservations != nil {
		t.Errorf("a new LUN 0 inherited reservations: version %d, %s", l.ReservationsVersion, l.Reservations)
	}
}
