package scsi

import (
	"encoding/binary"
	"testing"
)

func TestTransportIDRoundTrip(t *testing.T) {
	for _, p := range []PRPort{
		{InitiatorName: "iqn.2026-11.test:a", ISID: "400001370000"},
		{InitiatorName: "iqn.2026-11.test:a"},
		{InitiatorName: "eui.0123456789abcdef"},
		{InitiatorName: "iqn.x"},
	} {
		b := appendTransportID(nil, &p)
		if len(b) < tidMinLength || len(b)%4 != 0 || int(binary.BigEndian.Uint16(b[2:4])) != len(b)-4 {
			t.Fatalf("%+v: bad encoding %x", p, b)
		}
		got, n, err := parseTransportID(append(b, 0xff, 0xff), 0)
		if err != nil || n != len(b) || got != p {
			t.Fatalf("%+v: parsed %+v n=%d err=%v", p, got, n, err)
		}
	}
}

func TestTransportIDRejects(t *testing.T) {
	good := appendTransportID(nil, &PRPort{InitiatorName: "iqn.2026-11.test:a", ISID: "400001370000"})
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for name, b := range map[string][]byte{
		"short":        good[:3],
		"fc protocol":  mut(func(b []byte) []byte { b[0] = b[0]&^0x0f | 0x0; return b }),
		"format 10b":   mut(func(b []byte) []byte { b[0] = b[0]&0x0f | 0x80; return b }),
		"length odd":   mut(func(b []byte) []byte { b[3]++; return b }),
		"length long":  mut(func(b []byte) []byte { b[2] = 0x10; return b }),
		"no NUL":       mut(func(b []byte) []byte { return append(b[:4:4], []byte("iqn.2026-11.test:a,i,0x400001370000")[:16]...) }),
		"bad ISID":     append(append([]byte{0x45, 0, 0, 28}, "iqn.a,i,0x4000013700zz"...), make([]byte, 6)...),
		"no separator": append(append([]byte{0x45, 0, 0, 16}, "iqn.a"...), make([]byte, 11)...),
		"empty name":   append([]byte{0x05, 0, 0, 16}, make([]byte, 16)...),
	} {
		if _, _, err := parseTransportID(b, 0); err == nil {
			t.Errorf("%s: %x accepted", name, b)
		}
	}
}

func FuzzParseTransportID(f *testing.F) {
	f.Add(appendTransportID(nil, &PRPort{InitiatorName: "iqn.2026-11.test:a", ISID: "400001370000"}))
	f.Add(appendTransportID(nil, &PRPort{InitiatorName: "iqn.2026-11.test:a"}))
	f.Add([]byte{0x45, 0, 0xff, 0xfc})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, n, err := parseTransportID(b, 0)
		if err != nil {
			return
		}
		if n > len(b) || n < tidMinLength {
			t.Fatalf("length %d of %d", n, len(b))
		}
		// What parses re-encodes to something that parses the same.
		q, _, err := parseTransportID(appendTransportID(nil, &p), 0)
		if err != nil || q != p {
			t.Fatalf("round trip %+v -> %+v (%v)", p, q, err)
		}
	})
}

// FuzzPROut sends arbitrary PR OUT commands from two nexuses: nothing may
// panic and the state must stay consistent.
func FuzzPROut(f *testing.F) {
	f.Add(byte(0), byte(0), prParams(0, 1, 0), byte(0))
	f.Add(byte(1), byte(3), prParams(1, 0, 0), byte(0))
	f.Add(byte(7), byte(3), append(prParams(1, 2, 0), appendTransportID(nil, &PRPort{InitiatorName: "iqn.b"})...), byte(1))
	f.Fuzz(func(t *testing.T, sa, typ byte, params []byte, who byte) {
		a, b := testNexus(0), testNexus(1)
		d, lu := prSetup(t, LUConfig{}, a, b)
		prOutCmd(d, a, proRegisterIgnore, 0, 0, 1, 0)
		n := a
		if who&1 != 0 {
			n = b
		}
		r := run(d, n, prOutCDB(sa&0x1f, PRType(typ), len(params)), params, 0)
		if r.Status == StatusGood || r.Status == StatusReservationConflict || r.Status == StatusCheckCondition {
			st, _ := lu.pr.store.Load()
			if r := st.Reservation; r != nil {
				held := false
				for _, reg := range st.Registrations {
					held = held || reg.PRPort == r.Holder
				}
				if !held || !r.Type.valid() {
					t.Fatalf("reservation without a registered holder: %+v", st)
				}
			}
			return
		}
		t.Fatalf("status %v", r.Status)
	})
}

// FuzzPRSequence plays a sequence of PR OUT commands from three nexuses,
// with small keys so that they collide, checking the state invariants
// after every step.
func FuzzPRSequence(f *testing.F) {
	f.Add([]byte{0, 6, 0, 0, 1, 0, 1, 6, 0, 0, 2, 0, 0, 1, 3, 1, 0, 0, 1, 4, 8, 2, 1, 0})
	f.Add([]byte{0, 0, 0, 0, 1, 4, 1, 6, 0, 0, 1, 0, 0, 1, 7, 1, 0, 0, 1, 5, 3, 1, 1, 0, 2, 3, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		ns := []*Nexus{testNexus(0), testNexus(1), testNexus(2)}
		ns[2].TargetPort, ns[2].RelativeTargetPort = "iqn.2026-11.test:tgt,t,0x0002", 2
		d, lu := prSetup(t, LUConfig{}, ns...)
		for len(prog) >= 6 {
			step := prog[:6]
			prog = prog[6:]
			n := ns[int(step[0])%len(ns)]
			sa, typ := step[1]&7, PRType(step[2]&0xf)
			flags := step[5] & (flagAllTgPt | flagSpecIPT)
			r := prOutCmd(d, n, sa, typ, uint64(step[3]&3), uint64(step[4]&3), flags)
			switch r.Status {
			case StatusGood, StatusReservationConflict, StatusCheckCondition:
			default:
				t.Fatalf("status %v", r.Status)
			}
			st, _ := lu.pr.store.Load()
			for i := range st.Registrations {
				if st.Registrations[i].Key == 0 {
					t.Fatalf("registration with key 0: %+v", st)
				}
			}
			if r := st.Reservation; r != nil {
				held := false
				for _, reg := range st.Registrations {
					held = held || reg.PRPort == r.Holder
				}
				if !held || !r.Type.valid() {
					t.Fatalf("reservation without a registered holder: %+v", st)
				}
			}
			clearUA(d, n)
		}
	})
}
