package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// PR test helpers. They check responses themselves so that the tests read
// as the scenario they play.

func prGood(t *testing.T, r *Response) {
	t.Helper()
	if r.Status != StatusGood {
		t.Fatalf("got %v sense %x, want GOOD", r.Status, r.Sense)
	}
}

func prConflict(t *testing.T, r *Response) {
	t.Helper()
	if r.Status != StatusReservationConflict {
		t.Fatalf("got %v sense %x, want RESERVATION CONFLICT", r.Status, r.Sense)
	}
}

func prSense(t *testing.T, r *Response, key SenseKey, asc ASC) {
	t.Helper()
	k, a := senseOf(t, r)
	if k != key || a != asc {
		t.Fatalf("got sense %x/%04x, want %x/%04x", k, a, key, asc)
	}
}

// prParams builds the basic 24-byte PR OUT parameter list.
func prParams(resKey, saKey uint64, flags byte) []byte {
	b := make([]byte, 24)
	binary.BigEndian.PutUint64(b[0:8], resKey)
	binary.BigEndian.PutUint64(b[8:16], saKey)
	b[20] = flags
	return b
}

const (
	flagAPTPL   = 0x01
	flagAllTgPt = 0x04
	flagSpecIPT = 0x08
)

func prOutCDB(sa byte, typ PRType, plen int) []byte {
	c := make([]byte, 10)
	c[0], c[1], c[2] = opcPROut, sa, byte(typ)
	binary.BigEndian.PutUint32(c[5:9], uint32(plen))
	return c
}

// prOutCmd sends PR OUT sa with the basic parameter list.
func prOutCmd(d *Device, n *Nexus, sa byte, typ PRType, resKey, saKey uint64, flags byte) *Response {
	p := prParams(resKey, saKey, flags)
	return run(d, n, prOutCDB(sa, typ, len(p)), p, 0)
}

func prInCmd(d *Device, n *Nexus, sa byte, alloc uint16) *Response {
	c := make([]byte, 10)
	c[0], c[1] = opcPRIn, sa
	binary.BigEndian.PutUint16(c[7:9], alloc)
	return run(d, n, c, nil, uint32(alloc))
}

// readKeys returns the generation and keys READ KEYS reports.
func prReadKeys(t *testing.T, d *Device, n *Nexus) (uint32, []uint64) {
	t.Helper()
	r := prInCmd(d, n, prinReadKeys, 4096)
	prGood(t, r)
	if len(r.Data) < 8 {
		t.Fatalf("READ KEYS: %d bytes", len(r.Data))
	}
	al := binary.BigEndian.Uint32(r.Data[4:8])
	if int(al) != len(r.Data)-8 || al%8 != 0 {
		t.Fatalf("READ KEYS additional length %d for %d bytes", al, len(r.Data))
	}
	var keys []uint64
	for o := 8; o < len(r.Data); o += 8 {
		keys = append(keys, binary.BigEndian.Uint64(r.Data[o:]))
	}
	return binary.BigEndian.Uint32(r.Data[0:4]), keys
}

// readReservation returns (reserved, key, type).
func prReadReservation(t *testing.T, d *Device, n *Nexus) (bool, uint64, PRType) {
	t.Helper()
	r := prInCmd(d, n, prinReadResv, 4096)
	prGood(t, r)
	al := binary.BigEndian.Uint32(r.Data[4:8])
	switch {
	case al == 0 && len(r.Data) == 8:
		return false, 0, 0
	case al == 16 && len(r.Data) == 24:
		if r.Data[21]>>4 != 0 {
			t.Fatalf("scope %d, want LU_SCOPE", r.Data[21]>>4)
		}
		return true, binary.BigEndian.Uint64(r.Data[8:16]), PRType(r.Data[21] & 0xf)
	}
	t.Fatalf("READ RESERVATION: additional length %d, %d bytes", al, len(r.Data))
	return false, 0, 0
}

func prRead10(d *Device, n *Nexus) *Response {
	c := make([]byte, 10)
	c[0], c[5], c[8] = 0x28, 1, 1
	return run(d, n, c, nil, 512)
}

func prWrite10(d *Device, n *Nexus) *Response {
	c := make([]byte, 10)
	c[0], c[5], c[8] = 0x2a, 1, 1
	return run(d, n, c, make([]byte, 512), 0)
}

func prTUR(d *Device, n *Nexus) *Response { return run(d, n, make([]byte, 6), nil, 0) }

// prSetup returns a device and nexuses with their power-on UAs cleared.
func prSetup(t *testing.T, cfg LUConfig, nexuses ...*Nexus) (*Device, *LU) {
	t.Helper()
	d, lu, _ := testDevice(t, 64, cfg)
	for _, n := range nexuses {
		clearUA(d, n)
	}
	return d, lu
}

func TestPRRegisterReadKeysUnregister(t *testing.T) {
	a := testNexus(0)
	d, _ := prSetup(t, LUConfig{}, a)
	gen0, keys := prReadKeys(t, d, a)
	if len(keys) != 0 {
		t.Fatalf("fresh LU has keys %x", keys)
	}
	prGood(t, prOutCmd(d, a, proRegister, 0, 0, 0x1111, 0))
	gen, keys := prReadKeys(t, d, a)
	if len(keys) != 1 || keys[0] != 0x1111 || gen != gen0+1 {
		t.Fatalf("after REGISTER: gen %d keys %x", gen, keys)
	}
	// Re-registering with a wrong reservation key conflicts.
	prConflict(t, prOutCmd(d, a, proRegister, 0, 0x9999, 0x1112, 0))
	prConflict(t, prOutCmd(d, a, proRegister, 0, 0, 0x1112, 0))
	// With the right one the key changes.
	prGood(t, prOutCmd(d, a, proRegister, 0, 0x1111, 0x2222, 0))
	// REGISTER AND IGNORE EXISTING KEY needs no key.
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0xdead, 0x3333, 0))
	gen, keys = prReadKeys(t, d, a)
	if len(keys) != 1 || keys[0] != 0x3333 || gen != gen0+3 {
		t.Fatalf("after key changes: gen %d keys %x", gen, keys)
	}
	// Unregister.
	prGood(t, prOutCmd(d, a, proRegister, 0, 0x3333, 0, 0))
	gen, keys = prReadKeys(t, d, a)
	if len(keys) != 0 || gen != gen0+4 {
		t.Fatalf("after unregister: gen %d keys %x", gen, keys)
	}
	// An unregistered nexus registering key 0 does nothing.
	prGood(t, prOutCmd(d, a, proRegister, 0, 0, 0, 0))
	if g, _ := prReadKeys(t, d, a); g != gen {
		t.Fatalf("no-op REGISTER changed the generation %d -> %d", gen, g)
	}
	// An unregistered nexus giving a reservation key conflicts.
	prConflict(t, prOutCmd(d, a, proRegister, 0, 0x77, 0x78, 0))
}

func TestPRReadKeysTruncated(t *testing.T) {
	a, b := testNexus(0), testNexus(1)
	d, _ := prSetup(t, LUConfig{}, a, b)
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 1, 0))
	prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 2, 0))
	r := prInCmd(d, a, prinReadKeys, 8)
	prGood(t, r)
	if len(r.Data) != 8 || binary.BigEndian.Uint32(r.Data[4:8]) != 16 {
		t.Fatalf("truncated READ KEYS: %x", r.Data)
	}
	r = prInCmd(d, a, prinReadKeys, 20)
	if len(r.Data) != 20 || binary.BigEndian.Uint64(r.Data[8:16]) != 1 {
		t.Fatalf("READ KEYS alloc 20: %x", r.Data)
	}
	r = prInCmd(d, a, prinReadKeys, 0)
	prGood(t, r)
	if len(r.Data) != 0 {
		t.Fatalf("alloc 0 returned %d bytes", len(r.Data))
	}
}

var allPRTypes = []PRType{PRWriteExclusive, PRExclusiveAccess, PRWriteExclusiveRegsOnly,
	PRExclusiveAccessRegsOnly, PRWriteExclusiveAllRegistrants, PRExclusiveAccessAllRegistrants}

func TestPRReserveReleaseEveryType(t *testing.T) {
	a := testNexus(0)
	d, _ := prSetup(t, LUConfig{}, a)
	const k = 0xabc
	prGood(t, prOutCmd(d, a, proRegister, 0, 0, k, 0))
	gen, _ := prReadKeys(t, d, a)
	for _, typ := range allPRTypes {
		prGood(t, prOutCmd(d, a, proReserve, typ, k, 0, 0))
		ok, key, got := prReadReservation(t, d, a)
		want := uint64(k)
		if typ.allRegistrants() {
			want = 0
		}
		if !ok || key != want || got != typ {
			t.Fatalf("type %d: reservation %v key %x type %d", typ, ok, key, got)
		}
		// The holder reserving again with the same type is a no-op;
		// another type conflicts.
		prGood(t, prOutCmd(d, a, proReserve, typ, k, 0, 0))
		other := PRWriteExclusive
		if typ == other {
			other = PRExclusiveAccess
		}
		prConflict(t, prOutCmd(d, a, proReserve, other, k, 0, 0))
		// RELEASE with the wrong type is refused, wrong key conflicts.
		prSense(t, prOutCmd(d, a, proRelease, other, k, 0, 0), KeyIllegalRequest, ASCInvalidReleaseOfPR)
		prConflict(t, prOutCmd(d, a, proRelease, typ, k+1, 0, 0))
		prGood(t, prOutCmd(d, a, proRelease, typ, k, 0, 0))
		if ok, _, _ := prReadReservation(t, d, a); ok {
			t.Fatalf("type %d: still reserved after RELEASE", typ)
		}
	}
	// RESERVE and RELEASE do not bump the generation.
	if g, _ := prReadKeys(t, d, a); g != gen {
		t.Fatalf("generation %d -> %d across RESERVE/RELEASE", gen, g)
	}
	// RELEASE without a reservation is GOOD.
	prGood(t, prOutCmd(d, a, proRelease, PRWriteExclusive, k, 0, 0))
	// Unregistered nexus cannot reserve.
	b := testNexus(1)
	clearUA(d, b)
	prConflict(t, prOutCmd(d, b, proReserve, PRWriteExclusive, 0, 0, 0))
}

// TestPRAccess plays SPC-4 table 69 for reads and writes, as libiscsi's
// prout_reserve_access tests do: a holds the reservation, b is registered,
// then unregistered.
func TestPRAccess(t *testing.T) {
	cases := []struct {
		typ                                PRType
		regRead, regWrite, unRead, unWrite bool
	}{
		{PRExclusiveAccess, false, false, false, false},
		{PRWriteExclusive, true, false, true, false},
		{PRExclusiveAccessRegsOnly, true, true, false, false},
		{PRWriteExclusiveRegsOnly, true, true, true, false},
		{PRExclusiveAccessAllRegistrants, true, true, false, false},
		{PRWriteExclusiveAllRegistrants, true, true, true, false},
	}
	check := func(t *testing.T, r *Response, allowed bool) {
		t.Helper()
		if allowed {
			prGood(t, r)
		} else {
			prConflict(t, r)
		}
	}
	for _, c := range cases {
		a, b := testNexus(0), testNexus(1)
		d, _ := prSetup(t, LUConfig{}, a, b)
		prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
		prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 0xb, 0))
		prGood(t, prOutCmd(d, a, proReserve, c.typ, 0xa, 0, 0))
		prGood(t, prRead10(d, a))
		prGood(t, prWrite10(d, a))
		check(t, prRead10(d, b), c.regRead)
		check(t, prWrite10(d, b), c.regWrite)
		prGood(t, prOutCmd(d, b, proRegister, 0, 0xb, 0, 0))
		check(t, prRead10(d, b), c.unRead)
		check(t, prWrite10(d, b), c.unWrite)
		// Commands every column of table 69 allows.
		prGood(t, prTUR(d, b))
		prGood(t, run(d, b, []byte{0x12, 0, 0, 0, 36, 0}, nil, 36))
		prGood(t, prInCmd(d, b, prinReadKeys, 64))
		// RESERVE(6) from a non-holder conflicts under a PR.
		prConflict(t, run(d, b, []byte{opcReserve6, 0, 0, 0, 0, 0}, nil, 0))
	}
}

// TestPROwnership: the holder unregistering releases a WE/EA/RO
// reservation, but an All Registrants one stays with the others.
func TestPROwnership(t *testing.T) {
	for _, typ := range allPRTypes {
		a, b := testNexus(0), testNexus(1)
		d, _ := prSetup(t, LUConfig{}, a, b)
		prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
		prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 0xb, 0))
		prGood(t, prOutCmd(d, a, proReserve, typ, 0xa, 0, 0))
		prGood(t, prOutCmd(d, a, proRegister, 0, 0xa, 0, 0))
		ok, _, got := prReadReservation(t, d, a)
		if typ.allRegistrants() {
			if !ok || got != typ {
				t.Fatalf("type %d: reservation lost when one registrant left", typ)
			}
			prGood(t, prOutCmd(d, b, proRelease, typ, 0xb, 0, 0))
		} else if ok {
			t.Fatalf("type %d: reservation kept after its holder unregistered", typ)
		}
		// RO holders leaving tell the remaining registrants.
		r := prTUR(d, b)
		if typ == PRWriteExclusiveRegsOnly || typ == PRExclusiveAccessRegsOnly {
			prSense(t, r, KeyUnitAttention, ASCReservationsReleased)
		} else {
			prGood(t, r)
		}
		// The last registrant leaving an AR reservation ends it.
		if typ.allRegistrants() {
			prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
			prGood(t, prOutCmd(d, a, proReserve, typ, 0xa, 0, 0))
			prGood(t, prOutCmd(d, a, proRegister, 0, 0xa, 0, 0))
			prGood(t, prOutCmd(d, b, proRegister, 0, 0xb, 0, 0))
			if ok, _, _ := prReadReservation(t, d, a); ok {
				t.Fatalf("type %d: reservation outlived every registrant", typ)
			}
		}
	}
}

func TestPRReleaseUnitAttention(t *testing.T) {
	a, b, c := testNexus(0), testNexus(1), testNexus(2)
	d, _ := prSetup(t, LUConfig{}, a, b, c)
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 0xb, 0))
	prGood(t, prOutCmd(d, a, proReserve, PRExclusiveAccessRegsOnly, 0xa, 0, 0))
	// b is registered and so a holder-like registrant, but only a holds it.
	prGood(t, prOutCmd(d, b, proRelease, PRExclusiveAccessRegsOnly, 0xb, 0, 0))
	if ok, _, _ := prReadReservation(t, d, a); !ok {
		t.Fatal("RELEASE from a non-holder released the reservation")
	}
	prGood(t, prOutCmd(d, a, proRelease, PRExclusiveAccessRegsOnly, 0xa, 0, 0))
	prSense(t, prTUR(d, b), KeyUnitAttention, ASCReservationsReleased)
	prGood(t, prTUR(d, a)) // not the releasing nexus
	prGood(t, prTUR(d, c)) // not registered
}

func TestPRClear(t *testing.T) {
	a, b, c := testNexus(0), testNexus(1), testNexus(2)
	d, _ := prSetup(t, LUConfig{}, a, b, c)
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 0xb, 0))
	prGood(t, prOutCmd(d, a, proReserve, PRExclusiveAccess, 0xa, 0, 0))
	gen, _ := prReadKeys(t, d, a)
	prConflict(t, prOutCmd(d, c, proClear, 0, 0xc, 0, 0)) // not registered
	prConflict(t, prOutCmd(d, b, proClear, 0, 0xa, 0, 0)) // wrong key
	prGood(t, prOutCmd(d, b, proClear, 0, 0xb, 0, 0))
	g, keys := prReadKeys(t, d, c)
	if len(keys) != 0 || g != gen+1 {
		t.Fatalf("after CLEAR: gen %d (was %d) keys %x", g, gen, keys)
	}
	if ok, _, _ := prReadReservation(t, d, c); ok {
		t.Fatal("reservation survived CLEAR")
	}
	prSense(t, prTUR(d, a), KeyUnitAttention, ASCReservationsPreempted)
	prGood(t, prTUR(d, b))
	prGood(t, prTUR(d, c))
}

// TestPRPreemptRegistration is libiscsi's prout_preempt_rm_reg: no
// reservation, b preempts a's registration.
func TestPRPreemptRegistration(t *testing.T) {
	a, b := testNexus(0), testNexus(1)
	d, _ := prSetup(t, LUConfig{}, a, b)
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 0xb, 0))
	gen, _ := prReadKeys(t, d, a)
	// Preempting a key nobody has conflicts; key 0 is invalid.
	prConflict(t, prOutCmd(d, b, proPreempt, PRExclusiveAccess, 0xb, 0x77, 0))
	prSense(t, prOutCmd(d, b, proPreempt, PRExclusiveAccess, 0xb, 0, 0), KeyIllegalRequest, ASCInvalidFieldInParam)
	prGood(t, prOutCmd(d, b, proPreempt, PRExclusiveAccess, 0xb, 0xa, 0))
	g, keys := prReadKeys(t, d, b)
	if len(keys) != 1 || keys[0] != 0xb || g != gen+1 {
		t.Fatalf("after PREEMPT: gen %d (was %d) keys %x", g, gen, keys)
	}
	if ok, _, _ := prReadReservation(t, d, b); ok {
		t.Fatal("PREEMPT without a reservation created one")
	}
	prSense(t, prTUR(d, a), KeyUnitAttention, ASCRegistrationsPreempted)
	prGood(t, prTUR(d, b))
}

func TestPRPreemptHolder(t *testing.T) {
	a, b, c := testNexus(0), testNexus(1), testNexus(2)
	d, _ := prSetup(t, LUConfig{}, a, b, c)
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 0xb, 0))
	prGood(t, prOutCmd(d, c, proRegisterIgnore, 0, 0, 0xc, 0))
	prGood(t, prOutCmd(d, a, proReserve, PRWriteExclusive, 0xa, 0, 0))
	prConflict(t, prWrite10(d, b))
	// b takes the reservation over with another type.
	prGood(t, prOutCmd(d, b, proPreempt, PRExclusiveAccessRegsOnly, 0xb, 0xa, 0))
	ok, key, typ := prReadReservation(t, d, b)
	if !ok || key != 0xb || typ != PRExclusiveAccessRegsOnly {
		t.Fatalf("after PREEMPT: reserved %v key %x type %d", ok, key, typ)
	}
	_, keys := prReadKeys(t, d, b)
	if len(keys) != 2 {
		t.Fatalf("keys after PREEMPT %x", keys)
	}
	prSense(t, prTUR(d, a), KeyUnitAttention, ASCRegistrationsPreempted)
	// c kept its registration but lost the old reservation type.
	prSense(t, prTUR(d, c), KeyUnitAttention, ASCReservationsReleased)
	prGood(t, prWrite10(d, b))
	prGood(t, prWrite10(d, c)) // registrant under EA-RO
	prConflict(t, prRead10(d, a))
}

func TestPRPreemptAllRegistrants(t *testing.T) {
	a, b, c := testNexus(0), testNexus(1), testNexus(2)
	d, _ := prSetup(t, LUConfig{}, a, b, c)
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 0xb, 0))
	prGood(t, prOutCmd(d, c, proRegisterIgnore, 0, 0, 0xc, 0))
	prGood(t, prOutCmd(d, a, proReserve, PRExclusiveAccessAllRegistrants, 0xa, 0, 0))
	// A non-zero key only removes that registration; the AR reservation stays.
	prGood(t, prOutCmd(d, b, proPreempt, PRExclusiveAccessAllRegistrants, 0xb, 0xc, 0))
	if ok, _, typ := prReadReservation(t, d, a); !ok || typ != PRExclusiveAccessAllRegistrants {
		t.Fatal("AR reservation lost")
	}
	// Key 0 removes every other registration and makes b the only holder.
	prGood(t, prOutCmd(d, b, proPreempt, PRWriteExclusive, 0xb, 0, 0))
	ok, key, typ := prReadReservation(t, d, b)
	if !ok || key != 0xb || typ != PRWriteExclusive {
		t.Fatalf("after PREEMPT 0: %v %x %d", ok, key, typ)
	}
	if _, keys := prReadKeys(t, d, b); len(keys) != 1 {
		t.Fatalf("keys %x", keys)
	}
	prSense(t, prTUR(d, a), KeyUnitAttention, ASCRegistrationsPreempted)
}

// prBlockingBackend blocks reads while armed, so a test can hold a task in
// execution.
type prBlockingBackend struct {
	*memBackend
	started chan struct{}
	release chan struct{}
}

func (b *prBlockingBackend) ReadAt(p []byte, off int64) (int, error) {
	if b.started != nil {
		close(b.started)
		b.started = nil
		<-b.release
	}
	return b.memBackend.ReadAt(p, off)
}

func TestPRPreemptAndAbort(t *testing.T) {
	bb := &prBlockingBackend{memBackend: newMemBackend(64 * 512), started: make(chan struct{}), release: make(chan struct{})}
	lu, err := NewLU(bb, LUConfig{})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDevice(DeviceConfig{})
	if err := d.AddLU(0, lu); err != nil {
		t.Fatal(err)
	}
	a, b := testNexus(0), testNexus(1)
	clearUA(d, a)
	clearUA(d, b)
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 0xb, 0))
	prGood(t, prOutCmd(d, a, proReserve, PRExclusiveAccess, 0xa, 0, 0))

	started := bb.started
	readDone := make(chan *Response)
	go func() { readDone <- prRead10(d, a) }()
	<-started // a's READ is executing
	paDone := make(chan *Response)
	go func() { paDone <- prOutCmd(d, b, proPreemptAbort, PRExclusiveAccess, 0xb, 0xa, 0) }()
	// The abort waits for a's task to end; let the read finish once it is
	// marked aborted.
	for !prTaskAborted(lu) {
		select {
		case r := <-paDone:
			t.Fatalf("PREEMPT AND ABORT ended before a's task: %v", r.Status)
		default:
		}
		prYield()
	}
	close(bb.release)
	if r := <-readDone; r.Status != StatusTaskAborted {
		t.Fatalf("a's READ ended with %v, want TASK ABORTED", r.Status)
	}
	prGood(t, <-paDone)
	ok, key, _ := prReadReservation(t, d, b)
	if !ok || key != 0xb {
		t.Fatalf("after PREEMPT AND ABORT: %v %x", ok, key)
	}
}

func prTaskAborted(lu *LU) bool {
	lu.tasks.mu.Lock()
	defer lu.tasks.mu.Unlock()
	for _, e := range lu.tasks.active {
		if e.aborted {
			return true
		}
	}
	return false
}

// iscsiTID builds an iSCSI TransportID: format 01b when isid != "".
func prTID(name, isid string) []byte {
	p := PRPort{InitiatorName: name, ISID: isid}
	return appendTransportID(nil, &p)
}

func TestPRRegisterAndMove(t *testing.T) {
	a, b := testNexus(0), testNexus(1)
	d, _ := prSetup(t, LUConfig{}, a, b)
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(d, a, proReserve, PRExclusiveAccess, 0xa, 0, 0))
	prConflict(t, prWrite10(d, b))

	move := func(n *Nexus, resKey, saKey uint64, unreg bool, rtpi uint16, tid []byte) *Response {
		p := make([]byte, 24, 24+len(tid))
		binary.BigEndian.PutUint64(p[0:8], resKey)
		binary.BigEndian.PutUint64(p[8:16], saKey)
		if unreg {
			p[17] = 0x02
		}
		binary.BigEndian.PutUint16(p[18:20], rtpi)
		binary.BigEndian.PutUint32(p[20:24], uint32(len(tid)))
		p = append(p, tid...)
		return run(d, n, prOutCDB(proRegisterMove, PRExclusiveAccess, len(p)), p, 0)
	}
	isid := b.InitiatorPort[len(b.InitiatorPort)-12:]
	// Only the holder may move; not to itself; key must be non-zero;
	// the target port must exist.
	prConflict(t, move(b, 0, 0xb, false, 1, prTID(b.InitiatorName, isid)))
	prSense(t, move(a, 0xa, 0xb, false, 1, prTID(a.InitiatorName, a.InitiatorPort[len(a.InitiatorPort)-12:])),
		KeyIllegalRequest, ASCInvalidFieldInParam)
	prSense(t, move(a, 0xa, 0, false, 1, prTID(b.InitiatorName, isid)), KeyIllegalRequest, ASCInvalidFieldInParam)
	prSense(t, move(a, 0xa, 0xb, false, 99, prTID(b.InitiatorName, isid)), KeyIllegalRequest, ASCInvalidFieldInParam)

	gen, _ := prReadKeys(t, d, a)
	prGood(t, move(a, 0xa, 0xb, true, 1, prTID(b.InitiatorName, isid)))
	g, keys := prReadKeys(t, d, a)
	if len(keys) != 1 || keys[0] != 0xb || g != gen+1 {
		t.Fatalf("after REGISTER AND MOVE: gen %d keys %x", g, keys)
	}
	ok, key, typ := prReadReservation(t, d, b)
	if !ok || key != 0xb || typ != PRExclusiveAccess {
		t.Fatalf("reservation after move: %v %x %d", ok, key, typ)
	}
	prGood(t, prWrite10(d, b))
	prConflict(t, prWrite10(d, a))
	// Moving to a registered nexus gives it the new key; without UNREG
	// the source stays registered.
	prGood(t, prOutCmd(d, a, proRegister, 0, 0, 0xa, 0))
	aISID := a.InitiatorPort[len(a.InitiatorPort)-12:]
	prGood(t, move(b, 0xb, 0xaa, false, 1, prTID(a.InitiatorName, aISID)))
	if ok, key, _ := prReadReservation(t, d, a); !ok || key != 0xaa {
		t.Fatalf("after move to a registered nexus: %v %x", ok, key)
	}
	if _, keys := prReadKeys(t, d, a); len(keys) != 2 {
		t.Fatalf("keys %x", keys)
	}
	prGood(t, move(a, 0xaa, 0xb, true, 1, prTID(b.InitiatorName, isid)))
	// An All Registrants reservation cannot be moved.
	prGood(t, prOutCmd(d, b, proRelease, PRExclusiveAccess, 0xb, 0, 0))
	prGood(t, prOutCmd(d, b, proReserve, PRWriteExclusiveAllRegistrants, 0xb, 0, 0))
	prConflict(t, move(b, 0xb, 0xa, false, 1, prTID(a.InitiatorName, "")))
}

func TestPRSpecIPT(t *testing.T) {
	a, b, c := testNexus(0), testNexus(1), testNexus(2)
	d, _ := prSetup(t, LUConfig{}, a, b, c)
	bISID := b.InitiatorPort[len(b.InitiatorPort)-12:]
	tids := append(prTID(b.InitiatorName, bISID), prTID(c.InitiatorName, "")...)
	p := prParams(0, 0x5, flagSpecIPT)
	p = binary.BigEndian.AppendUint32(p, uint32(len(tids)))
	p = append(p, tids...)
	// The TransportIDs must fit the parameter list.
	long := append([]byte(nil), p...)
	binary.BigEndian.PutUint32(long[24:28], uint32(len(tids)+4))
	prSense(t, run(d, a, prOutCDB(proRegister, 0, len(long)), long, 0), KeyIllegalRequest, ASCParameterListLength)
	prSense(t, run(d, a, prOutCDB(proRegister, 0, 26), p[:26], 0), KeyIllegalRequest, ASCParameterListLength)
	// SPEC_I_PT is only for REGISTER.
	prSense(t, run(d, a, prOutCDB(proRegisterIgnore, 0, len(p)), p, 0), KeyIllegalRequest, ASCParameterListLength)
	prGood(t, run(d, a, prOutCDB(proRegister, 0, len(p)), p, 0))
	if _, keys := prReadKeys(t, d, a); len(keys) != 3 {
		t.Fatalf("SPEC_I_PT registered %d keys, want 3", len(keys))
	}
	// b and c are registered: they can reserve with the key.
	prGood(t, prOutCmd(d, c, proReserve, PRWriteExclusive, 0x5, 0, 0))
	prGood(t, prOutCmd(d, c, proRelease, PRWriteExclusive, 0x5, 0, 0))
	prGood(t, prOutCmd(d, b, proReserve, PRWriteExclusive, 0x5, 0, 0))
	// Registering an already registered initiator again is refused.
	prGood(t, prOutCmd(d, b, proRelease, PRWriteExclusive, 0x5, 0, 0))
	prGood(t, prOutCmd(d, a, proRegister, 0, 0x5, 0, 0))
	prSense(t, run(d, a, prOutCDB(proRegister, 0, len(p)), p, 0), KeyIllegalRequest, ASCInvalidFieldInParam)
	// A registered nexus may not use SPEC_I_PT.
	prGood(t, prOutCmd(d, a, proRegister, 0, 0, 0x6, 0))
	q := prParams(0x6, 0x7, flagSpecIPT)
	q = binary.BigEndian.AppendUint32(q, 0)
	prSense(t, run(d, a, prOutCDB(proRegister, 0, len(q)), q, 0), KeyIllegalRequest, ASCInvalidFieldInParam)
}

func TestPRAllTargetPorts(t *testing.T) {
	a1 := testNexus(0)
	a2 := testNexus(0)
	a2.TargetPort, a2.RelativeTargetPort = "iqn.2026-11.test:tgt,t,0x0002", 2
	d, _ := prSetup(t, LUConfig{}, a1, a2)
	// Without ALL_TG_PT only the one I_T nexus is registered.
	prGood(t, prOutCmd(d, a1, proRegister, 0, 0, 0x1, 0))
	prConflict(t, prOutCmd(d, a2, proReserve, PRExclusiveAccess, 0x1, 0, 0))
	prGood(t, prOutCmd(d, a1, proRegister, 0, 0x1, 0, 0))
	// With it, every target port.
	prGood(t, prOutCmd(d, a1, proRegister, 0, 0, 0x2, flagAllTgPt))
	prGood(t, prOutCmd(d, a2, proReserve, PRExclusiveAccess, 0x2, 0, 0))
	prGood(t, prWrite10(d, a1))
	r := prInCmd(d, a1, prinFullStat, 4096)
	prGood(t, r)
	if len(r.Data) < 32 || r.Data[8+12] != 0x03 {
		t.Fatalf("READ FULL STATUS: want ALL_TG_PT and R_HOLDER, got %x", r.Data)
	}
}

func TestPRReadFullStatusLayout(t *testing.T) {
	a, b := testNexus(0), testNexus(1)
	d, _ := prSetup(t, LUConfig{}, a, b)
	prGood(t, prOutCmd(d, a, proRegister, 0, 0, 0x1122334455667788, 0))
	prGood(t, prOutCmd(d, b, proRegister, 0, 0, 0xb, 0))
	prGood(t, prOutCmd(d, a, proReserve, PRWriteExclusiveRegsOnly, 0x1122334455667788, 0, 0))
	r := prInCmd(d, b, prinFullStat, 4096)
	prGood(t, r)
	data := r.Data
	if int(binary.BigEndian.Uint32(data[4:8])) != len(data)-8 {
		t.Fatalf("additional length %d for %d bytes", binary.BigEndian.Uint32(data[4:8]), len(data))
	}
	type desc struct {
		key    uint64
		flags  byte
		typ    byte
		rtpi   uint16
		tid    string
		format byte
	}
	var got []desc
	for o := 8; o < len(data); {
		dl := int(binary.BigEndian.Uint32(data[o+20 : o+24]))
		tid := data[o+24 : o+24+dl]
		if tid[0]&0x0f != protocolISCSI || dl%4 != 0 || dl < 20 {
			t.Fatalf("bad TransportID %x", tid)
		}
		name := string(tid[4:])
		for i := range name {
			if name[i] == 0 {
				name = name[:i]
				break
			}
		}
		got = append(got, desc{binary.BigEndian.Uint64(data[o:]), data[o+12], data[o+13],
			binary.BigEndian.Uint16(data[o+18:]), name, tid[0] >> 6})
		o += 24 + dl
	}
	want := []desc{
		{0x1122334455667788, 0x01, byte(PRWriteExclusiveRegsOnly), 1, a.InitiatorPort, 1},
		{0xb, 0, 0, 1, b.InitiatorPort, 1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d descriptors, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("descriptor %d: got %+v want %+v", i, got[i], want[i])
		}
	}
}

func TestPRReportCapabilities(t *testing.T) {
	a := testNexus(0)
	d, _ := prSetup(t, LUConfig{}, a)
	r := prInCmd(d, a, prinReportCap, 4096)
	prGood(t, r)
	c := r.Data
	if len(c) != 8 || binary.BigEndian.Uint16(c[0:2]) != 8 {
		t.Fatalf("REPORT CAPABILITIES %x", c)
	}
	if c[2] != 0x1c { // CRH SIP_C ATP_C, no PTPL_C for a memory store
		t.Errorf("byte 2 = %#x", c[2])
	}
	if c[3]&0x80 == 0 || (c[3]>>4)&7 > 5 || c[3]&1 != 0 {
		t.Errorf("byte 3 = %#x", c[3])
	}
	if c[4] != 0xea || c[5] != 0x01 {
		t.Errorf("type mask %x", c[4:6])
	}
	// Bad service actions are refused.
	prSense(t, prInCmd(d, a, 0x04, 64), KeyIllegalRequest, ASCInvalidFieldInCDB)
}

func TestPROutParameterChecks(t *testing.T) {
	a := testNexus(0)
	d, _ := prSetup(t, LUConfig{}, a)
	p := prParams(0, 1, 0)
	prSense(t, run(d, a, prOutCDB(proRegister, 0, 23), p[:23], 0), KeyIllegalRequest, ASCParameterListLength)
	prSense(t, run(d, a, prOutCDB(proReserve, PRExclusiveAccess, 25), append(p, 0), 0), KeyIllegalRequest, ASCParameterListLength)
	// Less Data-Out than the CDB announces.
	prSense(t, run(d, a, prOutCDB(proRegister, 0, 24), p[:10], 0), KeyIllegalRequest, ASCInvalidFieldInIU)
	prGood(t, prOutCmd(d, a, proRegister, 0, 0, 1, 0))
	// Scope other than LU_SCOPE, unknown types.
	c := prOutCDB(proReserve, PRExclusiveAccess, 24)
	c[2] |= 0x10
	prSense(t, run(d, a, c, prParams(1, 0, 0), 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
	for _, typ := range []PRType{0, 2, 4, 9, 15} {
		prSense(t, prOutCmd(d, a, proReserve, typ, 1, 0, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
	}
	// APTPL needs a store that persists.
	prSense(t, prOutCmd(d, a, proRegister, 0, 1, 2, flagAPTPL), KeyIllegalRequest, ASCInvalidFieldInParam)
	// Unknown service action.
	prSense(t, run(d, a, prOutCDB(0x08, 0, 24), p, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
}

func TestPRAPTPLSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pr.json")
	a, b := testNexus(0), testNexus(1)
	open := func() *Device {
		s, err := NewFileReservationStore(path)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := prSetup(t, LUConfig{Reservations: s}, a, b)
		return d
	}
	d := open()
	r := prInCmd(d, a, prinReportCap, 8)
	if r.Data[2]&0x01 == 0 || r.Data[3]&0x01 != 0 {
		t.Fatalf("file store: PTPL_C/PTPL_A %x", r.Data[2:4])
	}
	prGood(t, prOutCmd(d, a, proRegister, 0, 0, 0xa, flagAPTPL))
	prGood(t, prOutCmd(d, b, proRegister, 0, 0, 0xb, flagAPTPL))
	prGood(t, prOutCmd(d, a, proReserve, PRExclusiveAccess, 0xa, 0, 0))
	gen, _ := prReadKeys(t, d, a)

	d = open() // restart
	g, keys := prReadKeys(t, d, a)
	if len(keys) != 2 || g != gen {
		t.Fatalf("after restart with APTPL=1: gen %d (was %d) keys %x", g, gen, keys)
	}
	if ok, key, typ := prReadReservation(t, d, a); !ok || key != 0xa || typ != PRExclusiveAccess {
		t.Fatalf("reservation after restart: %v %x %d", ok, key, typ)
	}
	prConflict(t, prWrite10(d, b))
	if r := prInCmd(d, a, prinReportCap, 8); r.Data[3]&0x01 == 0 {
		t.Fatal("PTPL_A not reported")
	}
	// The last REGISTER sets APTPL=0: a restart drops everything.
	prGood(t, prOutCmd(d, b, proRegister, 0, 0xb, 0xbb, 0))
	d = open()
	if _, keys := prReadKeys(t, d, a); len(keys) != 0 {
		t.Fatalf("after restart with APTPL=0: keys %x", keys)
	}
	if ok, _, _ := prReadReservation(t, d, a); ok {
		t.Fatal("reservation survived a restart with APTPL=0")
	}
}

func TestFileReservationStoreRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"", "{", `{"format":2,"state":{}}`, `{"format":1}`, `{"format":1,"state":{},"x":1}`} {
		path := filepath.Join(dir, "bad.json")
		if err := prWriteFile(path, content); err != nil {
			t.Fatal(err)
		}
		if _, err := NewFileReservationStore(path); err == nil {
			t.Errorf("content %q accepted", content)
		}
	}
}

func TestReservationStoreUpdateFailureChangesNothing(t *testing.T) {
	for name, s := range map[string]ReservationStore{
		"memory": NewMemoryReservationStore(),
		"file":   prFileStore(t),
	} {
		if err := s.Update(func(st *PRState) error {
			st.Registrations = append(st.Registrations, PRRegistration{Key: 1})
			st.APTPL = true
			return nil
		}); err != nil {
			t.Fatal(name, err)
		}
		before, _ := s.Load()
		boom := errors.New("boom")
		err := s.Update(func(st *PRState) error {
			st.Registrations[0].Key = 2
			st.Generation = 99
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("%s: Update returned %v", name, err)
		}
		after, _ := s.Load()
		if after.Registrations[0].Key != 1 || after.Generation != 0 || before.Registrations[0].Key != 1 {
			t.Fatalf("%s: failed Update leaked: %+v", name, after)
		}
	}
}

func TestPRStoreErrorIsInternalFailure(t *testing.T) {
	a := testNexus(0)
	d, _ := prSetup(t, LUConfig{Reservations: failingStore{}}, a)
	r := prInCmd(d, a, prinReadKeys, 64)
	prSense(t, r, KeyHardwareError, ASCInternalTargetFailure)
	// A store may choose the sense itself.
	d, _ = prSetup(t, LUConfig{Reservations: failingStore{err: NewSense(KeyNotReady, ASCLUNotReadyTransition)}}, a)
	prSense(t, prRead10(d, a), KeyNotReady, ASCLUNotReadyTransition)
}

type failingStore struct{ err error }

func (f failingStore) Load() (*PRState, error) {
	if f.err != nil {
		return nil, f.err
	}
	return nil, errors.New("store down")
}

func (f failingStore) Update(func(*PRState) error) error { _, err := f.Load(); return err }

func prWriteFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }

func prFileStore(t *testing.T) *FileReservationStore {
	t.Helper()
	s, err := NewFileReservationStore(filepath.Join(t.TempDir(), "pr.json"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// yield lets other goroutines run while a test polls for a state.
func prYield() {
	runtime.Gosched()
	time.Sleep(time.Millisecond)
}

// TestFileReservationStoreDeterministic: the same transitions give the
// same bytes, so replicas and restarts can compare files.
func TestFileReservationStoreDeterministic(t *testing.T) {
	var files [][]byte
	for i := 0; i < 2; i++ {
		path := filepath.Join(t.TempDir(), "pr.json")
		s, err := NewFileReservationStore(path)
		if err != nil {
			t.Fatal(err)
		}
		a, b := testNexus(0), testNexus(1)
		d, _ := prSetup(t, LUConfig{Reservations: s}, a, b)
		prGood(t, prOutCmd(d, a, proRegister, 0, 0, 0xa, flagAPTPL))
		prGood(t, prOutCmd(d, b, proRegister, 0, 0, 0xb, flagAPTPL|flagAllTgPt))
		prGood(t, prOutCmd(d, b, proReserve, PRWriteExclusiveAllRegistrants, 0xb, 0, 0))
		prGood(t, prOutCmd(d, a, proPreempt, PRExclusiveAccess, 0xa, 0xb, 0))
		b1, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, b1)
	}
	if string(files[0]) != string(files[1]) {
		t.Fatalf("encodings differ:\n%s\n%s", files[0], files[1])
	}
	if len(files[0]) == 0 || files[0][0] != '{' {
		t.Fatalf("file content %q", files[0])
	}
}

func TestPRRegistrationLimit(t *testing.T) {
	a, b := testNexus(0), testNexus(1)
	d, _ := prSetup(t, LUConfig{}, a, b)
	// One SPEC_I_PT REGISTER with more initiators than the LU keeps.
	var tids []byte
	for i := 0; i < maxRegistrations; i++ {
		tids = append(tids, prTID(fmt.Sprintf("iqn.2026-11.test:many%d", i), "")...)
	}
	p := prParams(0, 0x5, flagSpecIPT)
	p = binary.BigEndian.AppendUint32(p, uint32(len(tids)))
	p = append(p, tids...)
	prSense(t, run(d, a, prOutCDB(proRegister, 0, len(p)), p, 0), KeyIllegalRequest, ASCInsufficientRegResources)
	if _, keys := prReadKeys(t, d, a); len(keys) != 0 {
		t.Fatalf("a refused SPEC_I_PT REGISTER left %d registrations", len(keys))
	}
	// One fewer fits.
	short := tids[:len(tids)-len(prTID("iqn.2026-11.test:many1023", ""))]
	p = prParams(0, 0x5, flagSpecIPT)
	p = binary.BigEndian.AppendUint32(p, uint32(len(short)))
	p = append(p, short...)
	prGood(t, run(d, a, prOutCDB(proRegister, 0, len(p)), p, 0))
	prSense(t, prOutCmd(d, b, proRegister, 0, 0, 0xb, 0), KeyIllegalRequest, ASCInsufficientRegResources)
}
