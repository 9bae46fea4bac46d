package sim

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

// Persistent reservations under faults. Before the workload starts, every
// writer of a LUN registers a key with ALL_TG_PT (its registration covers
// every node's port) and the first writer reserves the LUN Write
// Exclusive, Registrants Only: the writers write as before, the readers
// and the prober read. After every heal the harness checks, through every
// running node, that the keys and the reservation are still those, and
// that the LUN's owner refuses a write from a host that never registered.
// The reservation is the device's, not a node's: no fault may lose it.

const resvTypeWERO = 0x05 // Write Exclusive, Registrants Only

func writerName(lun, w int) string { return fmt.Sprintf("w%d.%d", lun, w) }

func resvKey(lun, w int) uint64 { return 0x5100 + uint64(lun)<<4 + uint64(w) }

// resvExecute runs cdb on LUN lun through n as client, past the unit
// attentions a new nexus or an event gives it and the NOT READY of a
// transition.
func (s *Sim) resvExecute(n *node, lun int, client string, cdb, data []byte, alloc uint32) (*scsi.Response, error) {
	nx := nexusFor(client, n.id)
	var r *scsi.Response
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		r, err = n.execute(simIQN, &scsi.Command{Nexus: &nx.n, LUN: s.luns[lun], CDB: cdb, Data: data,
			DataOutLen: uint32(len(data)), DataInLen: alloc})
		if err != nil {
			return nil, err
		}
		k, _, _ := sense(r)
		switch {
		case r.Status == scsi.StatusCheckCondition && k == keyUnitAttention:
		case r.Status == scsi.StatusCheckCondition && k == 0x02: // NOT READY: a transition
			time.Sleep(100 * time.Millisecond)
		default:
			return r, nil
		}
	}
	return r, nil
}

// prOut sends PERSISTENT RESERVE OUT service action sa through n.
func (s *Sim) prOut(n *node, lun int, client string, sa, typ byte, key, sakey uint64, allPorts bool) error {
	data := make([]byte, 24)
	binary.BigEndian.PutUint64(data[0:], key)
	binary.BigEndian.PutUint64(data[8:], sakey)
	if allPorts {
		data[20] = 0x04
	}
	r, err := s.resvExecute(n, lun, client, []byte{0x5f, sa, typ, 0, 0, 0, 0, 0, 24, 0}, data, 0)
	if err == nil && r.Status != scsi.StatusGood {
		err = fmt.Errorf("status %v sense %x", r.Status, r.Sense)
	}
	if err != nil {
		return fmt.Errorf("PERSISTENT RESERVE OUT %#x of LUN %d through %s: %w", sa, lun, n.id, err)
	}
	return nil
}

// ownerNode returns the node that owns LUN lun in the state.
func (s *Sim) ownerNode(lun int) *node {
	st := s.state()
	if st == nil || st.Targets[simIQN] == nil || st.Targets[simIQN].LUNs[s.luns[lun]] == nil {
		return nil
	}
	return s.node(st.Targets[simIQN].LUNs[s.luns[lun]].Owner)
}

// reserve registers the writers and reserves every LUN.
func (s *Sim) reserve() error {
	for lun := range s.luns {
		owner := s.ownerNode(lun)
		if owner == nil {
			return fmt.Errorf("LUN %d has no owner", lun)
		}
		for w := 0; w < s.cfg.Writers; w++ {
			if err := s.prOut(owner, lun, writerName(lun, w), 0x00, 0, 0, resvKey(lun, w), true); err != nil {
				return err
			}
		}
		if err := s.prOut(owner, lun, writerName(lun, 0), 0x01, resvTypeWERO, resvKey(lun, 0), 0, false); err != nil {
			return err
		}
	}
	return nil
}

// checkReservations returns what differs from the reservations reserve
// made: through every running node that exposes the LUN, the registered
// keys and the reservation; through the owner, a write by a host that
// never registered must meet RESERVATION CONFLICT.
func (s *Sim) checkReservations() []string {
	var out []string
	for lun := range s.luns {
		var want []uint64
		for w := 0; w < s.cfg.Writers; w++ {
			want = append(want, resvKey(lun, w))
		}
		for _, n := range s.nodes {
			if n.agent() == nil {
				continue
			}
			keys, r, err := s.readKeys(n, lun, "resv-check")
			if err != nil || r.Status == scsi.StatusCheckCondition && isAbsent(r) {
				continue // the node does not expose the LUN (a new machine without a copy)
			}
			if r.Status != scsi.StatusGood {
				out = append(out, fmt.Sprintf("LUN %d: READ KEYS through %s: status %v sense %x", lun, n.id, r.Status, r.Sense))
				continue
			}
			if !slices.Equal(keys, want) {
				out = append(out, fmt.Sprintf("LUN %d: keys through %s are %x, want %x", lun, n.id, keys, want))
			}
			r, err = s.resvExecute(n, lun, "resv-check", []byte{0x5e, 0x01, 0, 0, 0, 0, 0, 1, 0, 0}, nil, 256)
			switch {
			case err != nil:
				out = append(out, fmt.Sprintf("LUN %d: READ RESERVATION through %s: %v", lun, n.id, err))
			case r.Status != scsi.StatusGood || len(r.Data) < 8+16 || binary.BigEndian.Uint32(r.Data[4:]) != 16:
				out = append(out, fmt.Sprintf("LUN %d: no reservation through %s (status %v, %x)", lun, n.id, r.Status, r.Data))
			case binary.BigEndian.Uint64(r.Data[8:]) != resvKey(lun, 0) || r.Data[8+13]&0x0f != resvTypeWERO:
				out = append(out, fmt.Sprintf("LUN %d: the reservation through %s is %x", lun, n.id, r.Data[8:24]))
			}
		}
		owner := s.ownerNode(lun)
		if owner == nil || owner.agent() == nil {
			out = append(out, fmt.Sprintf("LUN %d: no owner runs", lun))
			continue
		}
		// WRITE(16) of no blocks: the reservation is checked, nothing is
		// written if it is wrongly let through.
		r, err := s.resvExecute(owner, lun, "intruder", cdb16(0x8a, 0, 0, false), nil, 0)
		if err != nil || r.Status != scsi.StatusReservationConflict {
			out = append(out, fmt.Sprintf("LUN %d: a write by an unregistered host through owner %s: %v %v, want RESERVATION CONFLICT", lun, owner.id, statusOf(r), err))
		}
	}
	return out
}

// readKeys sends PERSISTENT RESERVE IN, READ KEYS through n as client and
// returns the registered keys, sorted, with the response.
func (s *Sim) readKeys(n *node, lun int, client string) ([]uint64, *scsi.Response, error) {
	r, err := s.resvExecute(n, lun, client, []byte{0x5e, 0x00, 0, 0, 0, 0, 0, 1, 0, 0}, nil, 256)
	if err != nil || r.Status != scsi.StatusGood || len(r.Data) < 8 {
		return nil, r, err
	}
	var keys []uint64
	for i := 8; i+8 <= min(len(r.Data), 8+int(binary.BigEndian.Uint32(r.Data[4:]))); i += 8 {
		keys = append(keys, binary.BigEndian.Uint64(r.Data[i:]))
	}
	slices.Sort(keys)
	return keys, r, nil
}

// isAbsent reports a LOGICAL UNIT NOT SUPPORTED answer.
func isAbsent(r *scsi.Response) bool {
	k, asc, ascq := sense(r)
	return k == 0x05 && asc == 0x25 && ascq == 0
}

func statusOf(r *scsi.Response) string {
	if r == nil {
		return "no response"
	}
	return fmt.Sprintf("status %v sense %x", r.Status, r.Sense)
}
