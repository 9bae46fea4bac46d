package scsi

import (
	"fmt"
	"testing"
)

func spc2Reserve6(d *Device, n *Nexus) *Response {
	return run(d, n, []byte{opcReserve6, 0, 0, 0, 0, 0}, nil, 0)
}

func spc2Release6(d *Device, n *Nexus) *Response {
	return run(d, n, []byte{opcRelease6, 0, 0, 0, 0, 0}, nil, 0)
}

func prModeSense6(d *Device, n *Nexus) *Response {
	return run(d, n, []byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255)
}

// TestSPC2TwoInitiators follows libiscsi's reserve6_2initiators.
func TestSPC2TwoInitiators(t *testing.T) {
	a, b := testNexus(0), testNexus(1)
	d, _ := prSetup(t, LUConfig{}, a, b)
	prGood(t, spc2Reserve6(d, a))
	prGood(t, spc2Reserve6(d, a)) // the holder may reserve again
	prConflict(t, spc2Reserve6(d, b))
	prGood(t, spc2Release6(d, b)) // a no-op for a non-holder
	prGood(t, prModeSense6(d, a))
	prConflict(t, prModeSense6(d, b))
	prConflict(t, prWrite10(d, b))
	prConflict(t, prRead10(d, b))
	prConflict(t, prInCmd(d, b, prinReadKeys, 64))
	prGood(t, run(d, b, []byte{0x12, 0, 0, 0, 36, 0}, nil, 36)) // INQUIRY
	prGood(t, run(d, b, []byte{0x03, 0, 0, 0, 18, 0}, nil, 18)) // REQUEST SENSE
	prConflict(t, spc2Reserve6(d, b))
	prGood(t, spc2Release6(d, a))
	prGood(t, spc2Reserve6(d, b))
	prConflict(t, prWrite10(d, a))
	prGood(t, spc2Release6(d, b))
	prGood(t, prWrite10(d, a))
}

func TestSPC2Reserve10AndThirdParty(t *testing.T) {
	a, b := testNexus(0), testNexus(1)
	d, _ := prSetup(t, LUConfig{}, a, b)
	r10 := []byte{opcReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	prGood(t, run(d, a, r10, nil, 0))
	prConflict(t, run(d, b, r10, nil, 0))
	prGood(t, run(d, a, []byte{opcRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0))
	prGood(t, run(d, b, r10, nil, 0))
	prGood(t, run(d, b, []byte{opcRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0))
	// Third-party and LONGID reservations, extents: not supported.
	prSense(t, run(d, a, []byte{opcReserve10, 0x10, 0, 7, 0, 0, 0, 0, 0, 0}, nil, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
	prSense(t, run(d, a, []byte{opcReserve10, 0x02, 0, 0, 0, 0, 0, 0, 8, 0}, nil, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
	prSense(t, run(d, a, []byte{opcReserve6, 0x01, 0, 0, 0, 0}, nil, 0), KeyIllegalRequest, ASCInvalidFieldInCDB)
}

func TestSPC2ReleasedByResetAndNexusLoss(t *testing.T) {
	a, b := testNexus(0), testNexus(1)
	d, lu := prSetup(t, LUConfig{}, a, b)
	prGood(t, spc2Reserve6(d, a))
	if d.LUNReset(a, 0) != TMFComplete {
		t.Fatal("LUN RESET failed")
	}
	clearUA(d, a)
	clearUA(d, b)
	prGood(t, spc2Reserve6(d, b))
	lu.nexusLost(b.Key())
	prGood(t, spc2Reserve6(d, a))
	lu.resetReservations()
	prGood(t, spc2Reserve6(d, b))
}

// TestSPC2UnderPersistentReservation checks SPC-4 5.13.3 (CRH=1) and
// SPC-2 5.5.1.
func TestSPC2UnderPersistentReservation(t *testing.T) {
	a, b, c := testNexus(0), testNexus(1), testNexus(2)
	d, lu := prSetup(t, LUConfig{}, a, b, c)
	prGood(t, prOutCmd(d, a, proRegisterIgnore, 0, 0, 0xa, 0))
	prGood(t, prOutCmd(d, b, proRegisterIgnore, 0, 0, 0xb, 0))
	prGood(t, prOutCmd(d, a, proReserve, PRWriteExclusiveRegsOnly, 0xa, 0, 0))
	// The holder and, for RO, a registrant: GOOD, nothing happens.
	prGood(t, spc2Reserve6(d, a))
	prGood(t, spc2Reserve6(d, b))
	if lu.pr.spc2Holder != "" {
		t.Fatal("RESERVE under a persistent reservation took an SPC-2 reservation")
	}
	prGood(t, spc2Release6(d, a))
	if ok, _, _ := prReadReservation(t, d, a); !ok {
		t.Fatal("RELEASE(6) released the persistent reservation")
	}
	prConflict(t, spc2Reserve6(d, c))
	prConflict(t, spc2Release6(d, c))
	// Registrations without a reservation: RESERVE and RELEASE conflict
	// whoever sends them.
	prGood(t, prOutCmd(d, a, proRelease, PRWriteExclusiveRegsOnly, 0xa, 0, 0))
	clearUA(d, b)
	prConflict(t, spc2Reserve6(d, a))
	prConflict(t, spc2Reserve6(d, c))
	prConflict(t, spc2Release6(d, c))
	// No registration left: plain SPC-2, which blocks the other nexuses'
	// PR commands.
	prGood(t, prOutCmd(d, a, proRegister, 0, 0xa, 0, 0))
	prGood(t, prOutCmd(d, b, proRegister, 0, 0xb, 0, 0))
	prGood(t, spc2Reserve6(d, c))
	prConflict(t, prOutCmd(d, a, proRegister, 0, 0, 0xa, 0))
	prGood(t, spc2Release6(d, c))
	prGood(t, prOutCmd(d, a, proRegister, 0, 0, 0xa, 0))
}

// TestSPC2ReleasedWhenHolderForgotten: the transport's nexus-loss path
// (Device.NexusLost) drops the holder's nexus; its reservation goes too.
func TestSPC2ReleasedWhenHolderForgotten(t *testing.T) {
	a, b := testNexus(0), testNexus(1)
	d, _ := prSetup(t, LUConfig{}, a, b)
	prGood(t, spc2Reserve6(d, a))
	prConflict(t, prWrite10(d, b))
	d.NexusLost(a)
	prGood(t, prWrite10(d, b))
	prGood(t, spc2Reserve6(d, b))
	clearUA(d, a)
	prConflict(t, spc2Reserve6(d, a))
}

// TestPRNexusRegistryPruned: sessions come and go (a new ISID each time);
// the PR registry of nexuses does not keep the forgotten ones.
func TestPRNexusRegistryPruned(t *testing.T) {
	d, lu := prSetup(t, LUConfig{})
	for i := 0; i < 1000; i++ {
		n := testNexus(0)
		n.InitiatorPort = fmt.Sprintf("%s,i,0x%012x", n.InitiatorName, i)
		prGood(t, run(d, n, []byte{0x12, 0, 0, 0, 36, 0}, nil, 36))
		prTUR(d, n)
		d.NexusLost(n)
	}
	lu.pr.mu.RLock()
	size := len(lu.pr.nexuses)
	lu.pr.mu.RUnlock()
	if size > 200 {
		t.Fatalf("registry holds %d nexuses after 1000 short sessions", size)
	}
}
