package scsi

import (
	"sync"
	"testing"
)

// sharedStore stands in for a replicated store: several nodes' views of
// one state, each view notifying the other views' watchers of its
// commits, as a Raft-backed store would on apply.
type sharedStore struct {
	mu    sync.Mutex
	state *MemoryReservationStore
	views []*sharedView
}

type sharedView struct {
	s       *sharedStore
	watcher func(*PRState)
}

func (s *sharedStore) view() *sharedView {
	v := &sharedView{s: s}
	s.mu.Lock()
	s.views = append(s.views, v)
	s.mu.Unlock()
	return v
}

func (v *sharedView) Load() (*PRState, error) { return v.s.state.Load() }

func (v *sharedView) Update(fn func(*PRState) error) error {
	v.s.mu.Lock()
	defer v.s.mu.Unlock()
	if err := v.s.state.Update(fn); err != nil {
		return err
	}
	st, _ := v.s.state.Load()
	for _, o := range v.s.views {
		if o != v && o.watcher != nil {
			o.watcher(st)
		}
	}
	return nil
}

func (v *sharedView) Watch(fn func(*PRState)) { v.watcher = fn }

// TestPRAcrossNodes: two nodes (two devices) share the reservation state;
// a registers through node X, b through node Y; what b does on Y is
// enforced on X, and X's nexus gets the unit attention.
func TestPRAcrossNodes(t *testing.T) {
	shared := &sharedStore{state: NewMemoryReservationStore()}
	a, b := testNexus(0), testNexus(1)
	b.TargetPort, b.RelativeTargetPort, b.TargetPortGroup = "iqn.2026-11.test:tgt,t,0x0002", 2, 2
	x, _ := prSetup(t, LUConfig{Reservations: shared.view()}, a)
	y, _ := prSetup(t, LUConfig{Reservations: shared.view()}, b)

	prGood(t, prOutCmd(x, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(y, b, proRegisterIgnore, 0, 0, 0xb, 0))
	if _, keys := prReadKeys(t, y, b); len(keys) != 2 {
		t.Fatalf("node Y sees keys %x", keys)
	}
	prGood(t, prOutCmd(x, a, proReserve, PRExclusiveAccess, 0xa, 0, 0))
	prConflict(t, prWrite10(y, b))
	// b preempts a through node Y: a's nexus on node X is told.
	prGood(t, prOutCmd(y, b, proPreempt, PRExclusiveAccess, 0xb, 0xa, 0))
	prSense(t, prTUR(x, a), KeyUnitAttention, ASCRegistrationsPreempted)
	prConflict(t, prWrite10(x, a))
	prGood(t, prWrite10(y, b))
	// CLEAR through X reaches b on Y.
	prGood(t, prOutCmd(x, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(x, a, proClear, 0, 0xa, 0, 0))
	prSense(t, prTUR(y, b), KeyUnitAttention, ASCReservationsPreempted)
	prGood(t, prTUR(x, a))
}
