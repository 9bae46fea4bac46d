package sim

import (
	"fmt"
	"testing"

	"github.com/hatgt/hatgt/scsi"
)

// Persistent reservations are one device's, whichever node's port an
// initiator uses and whichever node owns the LUN: a registration through
// the owner is read through a standby node, and after the owner dies the
// new owner enforces the reservation (SPC-4 5.13; DESIGN.md, "High
// availability as the initiator sees it"). Before they lived in Raft, each
// node kept its own: the standby read no keys, and after the failover any
// initiator could write to a LUN reserved Exclusive Access.
func TestReservationsSurviveFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a simulated cluster; skipped with -short")
	}
	cfg := simConfig(3)
	s, err := New(cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	owner := s.ownerNode(0)
	var standby *node
	for _, n := range s.nodes {
		if n != owner {
			standby = n
			break
		}
	}
	// The hosts: A, the reservation holder; B, on a standby path; C,
	// never registered.
	prOut := func(n *node, client string, sa, typ byte, key, sakey uint64, allPorts bool) {
		t.Helper()
		if err := s.prOut(n, 0, client, sa, typ, key, sakey, allPorts); err != nil {
			t.Fatal(err)
		}
	}
	readKeys := func(n *node, client string) string {
		keys, r, err := s.readKeys(n, 0, client)
		if err != nil || r.Status != scsi.StatusGood {
			return fmt.Sprintf("%v %v", statusOf(r), err)
		}
		return fmt.Sprintf("%x", keys)
	}
	read := func(n *node, client string) scsi.Status {
		r, err := s.resvExecute(n, 0, client, cdb16(0x88, 0, 1, false), nil, BlockSize)
		if err != nil {
			t.Fatalf("%s: %v", n.id, err)
		}
		return r.Status
	}

	// ALL_TG_PT: the registration covers host A on every node's port, as
	// a multipath host needs to keep its reservation when its path moves.
	prOut(owner, "resv-a", 0x00, 0, 0, 0xa1, true)     // REGISTER, ALL_TG_PT
	prOut(owner, "resv-a", 0x01, 0x03, 0xa1, 0, false) // RESERVE, Exclusive Access
	if got := readKeys(standby, "resv-b"); got != "[a1]" {
		t.Fatalf("keys read through standby %s after a REGISTER through owner %s: %s", standby.id, owner.id, got)
	}
	if st := read(owner, "resv-c"); st != scsi.StatusReservationConflict {
		t.Fatalf("a READ by an unregistered host on the owner: %v", st)
	}

	owner.stop(true, false) // kill -9
	var next *node
	if err := s.waitFor("a new owner serves the LUN", cfg.HealTimeout, func() (bool, string) {
		next = s.ownerNode(0)
		if next == nil || next == owner {
			return false, "owner unchanged"
		}
		if st := read(next, "resv-a"); st != scsi.StatusGood {
			return false, fmt.Sprintf("the reservation holder's READ through %s: %v", next.id, st)
		}
		return true, ""
	}); err != nil {
		t.Fatal(err)
	}
	if st := read(next, "resv-c"); st != scsi.StatusReservationConflict {
		t.Errorf("after the failover to %s, a READ by a host without the Exclusive Access reservation: %v, want RESERVATION CONFLICT", next.id, st)
	}
	if got := readKeys(next, "resv-c"); got != "[a1]" {
		t.Errorf("keys on the new owner %s: %s", next.id, got)
	}
}
