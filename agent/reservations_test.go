package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hatgt/hatgt/blockstore"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/scsi"
)

const resvIQN = "iqn.2026-12.io.hatgt:resv"

// resvCluster is one FSM standing in for Raft: every "node" applies to it,
// so every node's hooks hear every change, as after a real commit.
type resvCluster struct {
	t   *testing.T
	fsm *cluster.FSM
	id  uint64 // the LUN's ID
}

func newResvCluster(t *testing.T) *resvCluster {
	c := &resvCluster{t: t, fsm: cluster.NewFSM(hclog.NewNullLogger())}
	for _, cmd := range []struct {
		typ string
		p   any
	}{
		{cluster.CmdNodeRegister, cluster.NodeRegister{Node: cluster.NodeInfo{ID: "n1", APIAddr: "127.0.0.1:1", RaftAddr: "127.0.0.1:2", GossipAddr: "127.0.0.1:3", ISCSIPortal: "127.0.0.1:4"}}},
		{cluster.CmdTargetCreate, cluster.TargetCreate{IQN: resvIQN}},
		{cluster.CmdLUNCreate, cluster.LUNCreate{LUN: cluster.LUN{Target: resvIQN, LUN: 0, Size: 1 << 20, SectorSize: 512,
			IOMode: "wb", Backing: "fileio", Replicas: 1, Placement: []string{"n1"}, Owner: "n1"}}},
	} {
		c.apply(cmd.typ, cmd.p)
	}
	c.id = c.fsm.State().Targets[resvIQN].LUNs[0].ID
	return c
}

func (c *resvCluster) apply(typ string, p any) {
	c.t.Helper()
	cmd, err := cluster.NewCommand(typ, p)
	if err == nil {
		err = c.fsm.ApplyCommand(cmd)
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// resvNode is one node's view: Apply goes to the shared FSM, with faults.
type resvNode struct {
	c *resvCluster
	// before runs before an Apply (another node's change getting in
	// first); after decides what Apply answers once the command was
	// applied, or (with drop) that it is lost.
	before  func()
	drop    bool
	after   error
	applies int
	// ownerApplied answers WaitAppliedOn (nil: the owner applied it).
	ownerApplied func(ctx context.Context, id string, idx uint64) error
	asked        []string
}

func (n *resvNode) Apply(_ context.Context, cmd cluster.Command) (uint64, error) {
	n.applies++
	if n.before != nil {
		f := n.before
		n.before = nil
		f()
	}
	if n.drop {
		return 0, errors.New("no leader")
	}
	if err := n.c.fsm.ApplyCommand(cmd); err != nil {
		return 0, err
	}
	return n.c.fsm.AppliedIndex(), n.after
}

func (n *resvNode) CatchUp(context.Context) error { return nil }

func (n *resvNode) WaitAppliedOn(ctx context.Context, id string, idx uint64) error {
	n.asked = append(n.asked, id)
	if n.ownerApplied != nil {
		return n.ownerApplied(ctx, id, idx)
	}
	return nil
}
func (n *resvNode) FSM() *cluster.FSM { return n.c.fsm }

// lu is a node's LU of the LUN over its cluster-wide store.
func (c *resvCluster) lu(n *resvNode, nodeID string) (*scsi.LU, *clusterReservations) {
	c.t.Helper()
	s := newClusterReservations(n, slog.New(slog.DiscardHandler), nodeID, resvIQN, 0, c.id)
	c.t.Cleanup(s.Close)
	lu, err := scsi.NewLU(blockstore.NewMemory(1<<20), scsi.LUConfig{BlockSize: 512, Reservations: s})
	if err != nil {
		c.t.Fatal(err)
	}
	return lu, s
}

func resvNexus(init string, rtpi uint16) *scsi.Nexus {
	name := "iqn.2026-12.io.hatgt:" + init
	return &scsi.Nexus{InitiatorName: name, InitiatorPort: name + ",i,0x000000000001",
		TargetName: resvIQN, TargetPort: resvIQN + ",t,0x0001", RelativeTargetPort: rtpi, TargetPortGroup: rtpi}
}

// exec runs cdb on a fresh device holding lu as LUN 0.
func exec(t *testing.T, lu *scsi.LU, n *scsi.Nexus, cdb, data []byte, alloc uint32) *scsi.Response {
	t.Helper()
	d := scsi.NewDevice(scsi.DeviceConfig{})
	if err := d.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	return d.Execute(context.Background(), &scsi.Command{Nexus: n, CDB: cdb, Data: data, DataOutLen: uint32(len(data)), DataInLen: alloc})
}

func prOut(sa byte, typ byte, key, sakey uint64) (cdb, data []byte) {
	cdb = []byte{0x5f, sa, typ, 0, 0, 0, 0, 0, 24, 0}
	data = make([]byte, 24)
	binary.BigEndian.PutUint64(data[0:], key)
	binary.BigEndian.PutUint64(data[8:], sakey)
	return cdb, data
}

// untilGood runs the command until it passes the unit attentions a new
// nexus gets first.
func untilGood(t *testing.T, lu *scsi.LU, n *scsi.Nexus, cdb, data []byte, alloc uint32) *scsi.Response {
	t.Helper()
	var r *scsi.Response
	for i := 0; i < 4; i++ {
		if r = exec(t, lu, n, cdb, data, alloc); r.Status == scsi.StatusGood {
			return r
		}
	}
	t.Fatalf("%x: status %v sense %x", cdb, r.Status, r.Sense)
	return nil
}

func readKeys(t *testing.T, lu *scsi.LU, n *scsi.Nexus) []uint64 {
	t.Helper()
	r := untilGood(t, lu, n, []byte{0x5e, 0, 0, 0, 0, 0, 0, 1, 0, 0}, nil, 256)
	var keys []uint64
	for i := 8; i+8 <= 8+int(binary.BigEndian.Uint32(r.Data[4:])); i += 8 {
		keys = append(keys, binary.BigEndian.Uint64(r.Data[i:]))
	}
	return keys
}

func senseASC(r *scsi.Response) (byte, uint16) {
	if len(r.Sense) < 14 {
		return 0, 0
	}
	return r.Sense[2] & 0xf, binary.BigEndian.Uint16(r.Sense[12:])
}

// A registration through one node is seen by every node; a reservation
// taken through one is enforced by another; a PREEMPT through one tells
// the preempted initiator on another (its unit attention).
func TestReservationsAreClusterWide(t *testing.T) {
	c := newResvCluster(t)
	n1, n2 := &resvNode{c: c}, &resvNode{c: c}
	lu1, _ := c.lu(n1, "n1")
	lu2, _ := c.lu(n2, "n2")
	hostA, hostB := resvNexus("a", 1), resvNexus("b", 2) // A on n1's port, B on n2's

	cdb, data := prOut(0x00, 0, 0, 0xa) // REGISTER 0xa
	untilGood(t, lu1, hostA, cdb, data, 0)
	if keys := readKeys(t, lu2, hostB); len(keys) != 1 || keys[0] != 0xa {
		t.Fatalf("n2 reads keys %x after a REGISTER through n1", keys)
	}
	cdb, data = prOut(0x01, 0x01, 0xa, 0) // RESERVE, Write Exclusive
	untilGood(t, lu1, hostA, cdb, data, 0)
	write := []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	if r := exec(t, lu2, hostB, write, make([]byte, 512), 0); r.Status != scsi.StatusReservationConflict {
		t.Fatalf("a WRITE through n2 by a host without the reservation n1 gave: status %v sense %x", r.Status, r.Sense)
	}
	// B registers through n2 and preempts A: A, on n1, is told.
	cdb, data = prOut(0x00, 0, 0, 0xb)
	untilGood(t, lu2, hostB, cdb, data, 0)
	cdb, data = prOut(0x04, 0x01, 0xb, 0xa) // PREEMPT A's key
	untilGood(t, lu2, hostB, cdb, data, 0)
	if keys := readKeys(t, lu2, hostB); len(keys) != 1 || keys[0] != 0xb {
		t.Fatalf("keys after the PREEMPT: %x", keys)
	}
	// The watcher delivers asynchronously: wait for A's unit attention.
	var key byte
	var asc uint16
	for i := 0; i < 1000 && asc != 0x2a05; i++ {
		r := exec(t, lu1, hostA, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
		key, asc = senseASC(r)
		if r.Status == scsi.StatusGood {
			asc = 0
		}
	}
	if key != 6 || asc != 0x2a05 {
		t.Fatalf("host A on n1 after its registration was preempted through n2: sense key %d ASC %#04x, want UNIT ATTENTION REGISTRATIONS PREEMPTED", key, asc)
	}
	if r := exec(t, lu1, hostA, write, make([]byte, 512), 0); r.Status != scsi.StatusReservationConflict {
		t.Fatalf("a WRITE by the preempted host through n1: status %v", r.Status)
	}
}

// A change computed from a state another node changed in the meantime is
// refused by Raft and computed again; one that Raft lost is refused to
// the initiator with NOT READY and changes nothing; one whose answer was
// lost after its commit counts (it is in the state).
func TestReservationsUpdateRaces(t *testing.T) {
	c := newResvCluster(t)
	n1, n2 := &resvNode{c: c}, &resvNode{c: c}
	lu1, _ := c.lu(n1, "n1")
	lu2, _ := c.lu(n2, "n2")
	hostA, hostB := resvNexus("a", 1), resvNexus("b", 2)
	untilGood(t, lu1, hostA, []byte{0, 0, 0, 0, 0, 0}, nil, 0)

	// n2's REGISTER commits between n1's read and n1's proposal.
	n1.before = func() {
		cdb, data := prOut(0x00, 0, 0, 0xb)
		untilGood(t, lu2, hostB, cdb, data, 0)
	}
	cdb, data := prOut(0x00, 0, 0, 0xa)
	untilGood(t, lu1, hostA, cdb, data, 0)
	if keys := readKeys(t, lu1, hostA); len(keys) != 2 {
		t.Fatalf("keys %x: the change that lost the race was not computed again", keys)
	}
	if n1.applies != 2 {
		t.Errorf("n1 proposed %d times, want 2", n1.applies)
	}

	// Lost: NOT READY, nothing changed.
	n1.drop = true
	cdb, data = prOut(0x01, 0x01, 0xa, 0)
	if r := exec(t, lu1, hostA, cdb, data, 0); r.Status != scsi.StatusCheckCondition {
		t.Fatalf("a RESERVE Raft lost: status %v", r.Status)
	} else if key, asc := senseASC(r); key != 2 || asc != 0x040a {
		t.Fatalf("a RESERVE Raft lost: sense key %d ASC %#04x, want NOT READY 04/0A", key, asc)
	}
	n1.drop = false
	r := untilGood(t, lu2, hostB, []byte{0x5e, 0x01, 0, 0, 0, 0, 0, 1, 0, 0}, nil, 256)
	if binary.BigEndian.Uint32(r.Data[4:]) != 0 {
		t.Fatalf("the lost RESERVE left a reservation: %x", r.Data)
	}

	// Committed, then the answer lost: GOOD, and every node has it.
	n1.after = errors.New("timed out waiting for the commit")
	untilGood(t, lu1, hostA, cdb, data, 0)
	n1.after = nil
	r = untilGood(t, lu2, hostB, []byte{0x5e, 0x01, 0, 0, 0, 0, 0, 1, 0, 0}, nil, 256)
	if binary.BigEndian.Uint32(r.Data[4:]) != 16 || binary.BigEndian.Uint64(r.Data[8:]) != 0xa {
		t.Fatalf("n2 after a RESERVE whose answer was lost: %x", r.Data)
	}
}

// A node that starts serving the LUN (a new owner after a failover, a
// restart) loads the state Raft holds.
func TestReservationsLoadedByANewLU(t *testing.T) {
	c := newResvCluster(t)
	n1 := &resvNode{c: c}
	lu1, _ := c.lu(n1, "n1")
	hostA := resvNexus("a", 1)
	cdb, data := prOut(0x00, 0, 0, 0xa)
	untilGood(t, lu1, hostA, cdb, data, 0)
	cdb, data = prOut(0x01, 0x03, 0xa, 0) // Exclusive Access
	untilGood(t, lu1, hostA, cdb, data, 0)

	lu3, s3 := c.lu(&resvNode{c: c}, "n3")
	if st, err := s3.Load(); err != nil || st.Reservation == nil || st.Reservation.Type != scsi.PRExclusiveAccess || len(st.Registrations) != 1 {
		t.Fatalf("a new LU's state: %+v, %v", st, err)
	}
	hostC := resvNexus("c", 3)
	exec(t, lu3, hostC, []byte{0, 0, 0, 0, 0, 0}, nil, 0) // past the power-on unit attention
	if r := exec(t, lu3, hostC, []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}, nil, 512); r.Status != scsi.StatusReservationConflict {
		t.Fatalf("a READ by another host on the new LU: status %v sense %x", r.Status, r.Sense)
	}
}

// A change through a node that does not own the LUN completes only once
// the owner, which checks every command against the reservations, says it
// applied it, or once another node owns the LUN; without either the
// initiator gets NOT READY, and the change's unit attentions still reach
// this node's nexuses.
func TestReservationChangeWaitsForTheOwner(t *testing.T) {
	c := newResvCluster(t)
	c.apply(cluster.CmdNodeRegister, cluster.NodeRegister{Node: cluster.NodeInfo{ID: "n2", APIAddr: "127.0.0.2:1", RaftAddr: "127.0.0.2:2", GossipAddr: "127.0.0.2:3", ISCSIPortal: "127.0.0.2:4"}})
	c.apply(cluster.CmdLUNDelete, cluster.LUNDelete{IQN: resvIQN, LUN: 0})
	c.apply(cluster.CmdLUNCreate, cluster.LUNCreate{LUN: cluster.LUN{Target: resvIQN, LUN: 0, Size: 1 << 20, SectorSize: 512,
		IOMode: "wb", Backing: "fileio", Replicas: 2, Placement: []string{"n1", "n2"}, Owner: "n1", InSync: []string{"n1", "n2"}}})
	c.id = c.fsm.State().Targets[resvIQN].LUNs[0].ID
	n2 := &resvNode{c: c}
	lu2, s2 := c.lu(n2, "n2")
	s2.timeout = 500 * time.Millisecond
	hostB, hostC := resvNexus("b", 2), resvNexus("c", 2)

	cdb, data := prOut(0x00, 0, 0, 0xb)
	untilGood(t, lu2, hostB, cdb, data, 0)
	cdb, data = prOut(0x00, 0, 0, 0xc)
	untilGood(t, lu2, hostC, cdb, data, 0)
	if len(n2.asked) != 2 || n2.asked[0] != "n1" {
		t.Fatalf("n2 asked %v whether the owner applied its changes, want n1 twice", n2.asked)
	}

	// The owner does not answer: NOT READY, though the change committed,
	// and C, preempted, hears of it on n2.
	n2.ownerApplied = func(ctx context.Context, id string, idx uint64) error {
		time.Sleep(10 * time.Millisecond)
		return errors.New("no answer")
	}
	cdb, data = prOut(0x04, 0x05, 0xb, 0xc) // PREEMPT C's registration
	r := exec(t, lu2, hostB, cdb, data, 0)
	if key, asc := senseASC(r); r.Status != scsi.StatusCheckCondition || key != 2 || asc != 0x040a {
		t.Fatalf("a PREEMPT the owner never confirmed: status %v sense %x, want NOT READY 04/0A", r.Status, r.Sense)
	}
	if keys := readKeys(t, lu2, hostB); len(keys) != 1 || keys[0] != 0xb {
		t.Fatalf("keys after the unconfirmed PREEMPT: %x (it committed)", keys)
	}
	var asc uint16
	for i := 0; i < 1000 && asc != 0x2a05; i++ {
		_, asc = senseASC(exec(t, lu2, hostC, []byte{0, 0, 0, 0, 0, 0}, nil, 0))
	}
	if asc != 0x2a05 {
		t.Fatalf("host C on n2 never heard it was preempted: last ASC %#04x", asc)
	}

	// The owner changes while n2 waits: the new owner applied the change
	// before it took over.
	n2.ownerApplied = func(ctx context.Context, id string, idx uint64) error {
		l := c.fsm.State().Targets[resvIQN].LUNs[0]
		if l.Owner == "n1" {
			c.apply(cluster.CmdLUNSetOwner, cluster.LUNSetOwner{IQN: resvIQN, LUN: 0, Owner: "n2", Epoch: l.Epoch})
		}
		return errors.New("no answer")
	}
	cdb, data = prOut(0x00, 0, 0, 0xc)
	untilGood(t, lu2, hostC, cdb, data, 0)
}
