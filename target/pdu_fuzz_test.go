package target

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// capturedStreams returns the captured byte streams of testdata/ by file
// name.
func capturedStreams(t testing.TB) map[string][]byte {
	t.Helper()
	names, err := filepath.Glob("testdata/*.[it]2[it]")
	if err != nil || len(names) == 0 {
		t.Fatalf("no captures in testdata: %v", err)
	}
	m := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		m[filepath.Base(n)] = b
	}
	return m
}

// splitPDUs decodes a captured stream into its PDUs and their wire bytes.
func splitPDUs(t testing.TB, name string, b []byte) (pdus []*PDU, wires [][]byte) {
	t.Helper()
	for len(b) > 0 {
		p, n, err := Decode(b, Digests{}, 0)
		if err != nil {
			t.Fatalf("%s: PDU #%d: %v", name, len(pdus), err)
		}
		pdus = append(pdus, p)
		wires = append(wires, b[:n])
		b = b[n:]
	}
	return pdus, wires
}

func TestCapturedStreams(t *testing.T) {
	for name, b := range capturedStreams(t) {
		pdus, wires := splitPDUs(t, name, b)
		if len(pdus) < 3 {
			t.Fatalf("%s: only %d PDUs", name, len(pdus))
		}
		for i, p := range pdus {
			if got := p.Encode(Digests{}); !bytes.Equal(got, wires[i]) {
				t.Fatalf("%s: PDU #%d (%v) re-encodes differently", name, i, p.Opcode())
			}
			switch p.Opcode() {
			case OpLoginReq, OpLoginResp, OpTextReq, OpTextResp:
				if _, err := parseTextList(p.Data); err != nil {
					t.Fatalf("%s: PDU #%d text: %v", name, i, err)
				}
			}
		}
	}
}

// FuzzDecodePDU: Decode never panics, never claims more bytes than it was
// given, and a decoded PDU re-encodes to bytes that decode to the same PDU.
func FuzzDecodePDU(f *testing.F) {
	for _, b := range capturedStreams(f) {
		f.Add(b, false, false)
		if len(b) > BHSLen {
			f.Add(b[:BHSLen], false, false)
		}
	}
	for _, p := range testPDUs() {
		for _, d := range allDigests {
			f.Add(p.Encode(d), d.Header, d.Data)
		}
	}
	f.Add([]byte{}, false, false)
	f.Add(make([]byte, BHSLen), true, true)
	f.Fuzz(func(t *testing.T, b []byte, hd, dd bool) {
		d := Digests{Header: hd, Data: dd}
		p, n, err := Decode(b, d, 1<<16)
		if n < 0 || n > len(b) {
			t.Fatalf("Decode used %d of %d bytes", n, len(b))
		}
		if err != nil {
			return
		}
		_ = p.CDB()
		wire := p.Encode(d)
		if len(wire) != n {
			t.Fatalf("re-encoded %d bytes, decoded from %d", len(wire), n)
		}
		q, m, err := Decode(wire, d, 1<<16)
		if err != nil || m != len(wire) || !samePDU(p, q) {
			t.Fatalf("re-encoded PDU decodes to a different PDU (err %v)", err)
		}
		r, err := ReadPDU(bytes.NewReader(b), d, 1<<16)
		if err != nil || !samePDU(p, r) {
			t.Fatalf("ReadPDU disagrees with Decode: %v", err)
		}
	})
}

// FuzzParseText: ParseText never panics; what it accepts encodes back to
// text that parses to the same pairs.
func FuzzParseText(f *testing.F) {
	for name, b := range capturedStreams(f) {
		pdus, _ := splitPDUs(f, name, b)
		for _, p := range pdus {
			if len(p.Data) > 0 {
				f.Add(p.Data)
			}
		}
	}
	for _, s := range []string{"", "A=1", "A=1\x00A=2\x00", "=\x00", "A\x00", "X-a.b=\x00\x00\x00", "CHAP_C=0x0102\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		kvs, err := ParseText(b)
		if err != nil {
			return
		}
		again, err := ParseText(EncodeText(kvs))
		if err != nil {
			t.Fatalf("re-encoded text does not parse: %v", err)
		}
		if len(kvs) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(kvs, again) {
			t.Fatalf("round trip %q -> %q", kvs, again)
		}
	})
}

// FuzzLogin feeds arbitrary bytes, cut into PDUs, through a login phase:
// it must never panic, must answer every request while the login runs,
// and must stop after it ends.
func FuzzLogin(f *testing.F) {
	for name, b := range capturedStreams(f) {
		if filepath.Ext(name) == ".i2t" {
			f.Add(b)
		}
	}
	var seq []byte
	for _, r := range []loginReq{
		{transit: true, csg: 0, nsg: 1, kvs: chapFirstKeys(KV{"AuthMethod", "CHAP,None"})},
		{csg: 0, kvs: []KV{{"CHAP_A", "5"}}},
		{transit: true, csg: 0, nsg: 1, kvs: []KV{{"CHAP_N", chapUser}, {"CHAP_R", "0x00"}, {"CHAP_I", "1"}, {"CHAP_C", "0x01"}}},
	} {
		seq = append(seq, r.pdu().Encode(Digests{})...)
	}
	f.Add(seq)
	f.Add(loginReq{cont: true, csg: 0, data: []byte("InitiatorName=")}.pdu().Encode(Digests{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		l := newLoginPhase(chapEnv(true))
		l.rand = &seqReader{}
		over := false
		for i := 0; len(b) >= BHSLen && i < 32; i++ {
			p, n, err := Decode(b, Digests{}, 1<<16)
			if err != nil {
				// Undecodable bytes: use the header alone.
				p, n = &PDU{}, BHSLen
				copy(p.BHS[:], b)
			}
			b = b[n:]
			resp, done, err := l.handle(p)
			if over {
				if err == nil || resp != nil {
					t.Fatal("request accepted after the login ended")
				}
				continue
			}
			if resp == nil {
				t.Fatalf("no response (err %v)", err)
			}
			if resp.Opcode() != OpLoginResp || resp.ITT() != p.ITT() {
				t.Fatalf("response %v ITT %d to ITT %d", resp.Opcode(), resp.ITT(), p.ITT())
			}
			if len(resp.Data) > loginMaxSend {
				t.Fatalf("response of %d bytes", len(resp.Data))
			}
			if err != nil && respStatus(resp) == LoginSuccess {
				t.Fatalf("failure %v with success status", err)
			}
			if done && l.result() == nil {
				t.Fatal("done without a result")
			}
			over = done || err != nil
		}
	})
}
