package sim

import (
	"encoding/binary"
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
	lun := s.luns[0]
	ownerOf := func() *node {
		st := s.state()
		return s.node(st.Targets[simIQN].LUNs[lun].Owner)
	}
	owner := ownerOf()
	var standby *node
	for _, n := range s.nodes {
		if n != owner {
			standby = n
			break
		}
	}
	hostA, hostB, hostC := nexusFor("resv-a", owner.id), nexusFor("resv-b", standby.id), nexusFor("resv-c", "any")
	do := func(n *node, nx *nexus, cdb, data []byte, alloc uint32) *scsi.Response {
		t.Helper()
		var r *scsi.Response
		for i := 0; i < 8; i++ { // past the unit attentions of a new nexus or owner
			r, err = n.execute(simIQN, &scsi.Command{Nexus: &nx.n, LUN: lun, CDB: cdb, Data: data,
				DataOutLen: uint32(len(data)), DataInLen: alloc})
			if err != nil {
				t.Fatalf("%s: %v", n.id, err)
			}
			if k, _, _ := sense(r); r.Status != scsi.StatusCheckCondition || k != keyUnitAttention {
				return r
			}
		}
		return r
	}
	// allPorts: ALL_TG_PT, the registration covers the initiator port
	// on every target port (every node), as a multipath host needs to
	// keep its reservation when its path moves.
	prOut := func(n *node, nx *nexus, sa, typ byte, key, sakey uint64, allPorts bool) {
		t.Helper()
		data := make([]byte, 24)
		binary.BigEndian.PutUint64(data[0:], key)
		binary.BigEndian.PutUint64(data[8:], sakey)
		if allPorts {
			data[20] = 0x04
		}
		if r := do(n, nx, []byte{0x5f, sa, typ, 0, 0, 0, 0, 0, 24, 0}, data, 0); r.Status != scsi.StatusGood {
			t.Fatalf("PERSISTENT RESERVE OUT %#x through %s: status %v sense %x", sa, n.id, r.Status, r.Sense)
		}
	}
	readKeys := func(n *node, nx *nexus) string {
		r := do(n, nx, []byte{0x5e, 0, 0, 0, 0, 0, 0, 1, 0, 0}, nil, 256)
		if r.Status != scsi.StatusGood {
			return fmt.Sprintf("status %v sense %x", r.Status, r.Sense)
		}
		return fmt.Sprintf("%x", r.Data[8:8+binary.BigEndian.Uint32(r.Data[4:])])
	}
	read := func(n *node, nx *nexus) scsi.Status {
		return do(n, nx, cdb16(0x88, 0, 1, false), nil, BlockSize).Status
	}

	prOut(owner, hostA, 0x00, 0, 0, 0xa1, true)     // REGISTER, ALL_TG_PT
	prOut(owner, hostA, 0x01, 0x03, 0xa1, 0, false) // RESERVE, Exclusive Access
	if got := readKeys(standby, hostB); got != "00000000000000a1" {
		t.Fatalf("keys read through standby %s after a REGISTER through owner %s: %s", standby.id, owner.id, got)
	}
	if st := read(owner, hostC); st != scsi.StatusReservationConflict {
		t.Fatalf("a READ by an unregistered host on the owner: %v", st)
	}

	owner.stop(true, false) // kill -9
	var next *node
	if err := s.waitFor("a new owner serves the LUN", cfg.HealTimeout, func() (bool, string) {
		next = ownerOf()
		if next == nil || next == owner {
			return false, "owner unchanged"
		}
		if st := read(next, hostA); st != scsi.StatusGood {
			return false, fmt.Sprintf("the reservation holder's READ through %s: %v", next.id, st)
		}
		return true, ""
	}); err != nil {
		t.Fatal(err)
	}
	if st := read(next, hostC); st != scsi.StatusReservationConflict {
		t.Errorf("after the failover to %s, a READ by a host without the Exclusive Access reservation: %v, want RESERVATION CONFLICT", next.id, st)
	}
	if got := readKeys(next, hostC); got != "00000000000000a1" {
		t.Errorf("keys on the new owner %s: %s", next.id, got)
	}
}
