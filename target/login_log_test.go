package target

import (
	"strings"
	"testing"
)

// loginStep sends one Login Request with flags and kvs and returns the
// response.
func (in *initiator) loginStep(flags byte, kvs []KV) *PDU {
	in.t.Helper()
	p := NewPDU(OpLoginReq)
	p.SetImmediate(true)
	p.SetFlags(flags)
	copy(p.BHS[8:14], in.isid[:])
	p.SetITT(in.itt)
	p.SetCmdSN(in.cmdSN)
	p.SetExpStatSN(in.expStatSN)
	p.Data = EncodeText(kvs)
	if _, err := in.nc.Write(p.Encode(Digests{})); err != nil {
		in.t.Fatal(err)
	}
	r := in.mustRecv()
	if r.Opcode() != OpLoginResp {
		in.t.Fatalf("got %v, want a Login Response", r.Opcode())
	}
	in.expStatSN = r.StatSN() + 1
	return r
}

// TestCHAPFailureLogged: a failed CHAP authentication is a warning naming
// the initiator and the user name it gave, never the secret.
func TestCHAPFailureLogged(t *testing.T) {
	var logs *logBuf
	env := newFTEnv(t, func(c *ServerConfig) { logs = captureLog(c) })
	const secret = "correct-horse-battery"
	chapIQN := ftIQN + "-chap"
	if err := env.srv.AddTarget(TargetConfig{Name: chapIQN, Device: env.dev, CHAP: &CHAPConfig{User: "alice", Secret: secret}}); err != nil {
		t.Fatal(err)
	}
	in := ftDial(t, env.addr)
	const security = 0 // CSG=security, no transit
	r := in.loginStep(security, []KV{{"InitiatorName", ftInitiator}, {"SessionType", "Normal"}, {"TargetName", chapIQN}, {"AuthMethod", "CHAP"}})
	if st := respStatus(r); st != LoginSuccess {
		t.Fatalf("AuthMethod: status %#04x", uint16(st))
	}
	r = in.loginStep(security, []KV{{"CHAP_A", "5"}})
	if st := respStatus(r); st != LoginSuccess || !strings.Contains(string(r.Data), "CHAP_C=") {
		t.Fatalf("CHAP_A: status %#04x, %q", uint16(st), r.Data)
	}
	r = in.loginStep(0x80|1, []KV{{"CHAP_N", "mallory"}, {"CHAP_R", "0x" + strings.Repeat("00", 16)}})
	if st := respStatus(r); st != LoginAuthFailed {
		t.Fatalf("wrong CHAP response: status %#04x, want authentication failure", uint16(st))
	}
	in.expectClosed() // the target logs before it closes
	lines := logs.lines("login failed")
	if len(lines) != 1 {
		t.Fatalf("%d login failure lines, want 1:\n%s", len(lines), logs)
	}
	for _, want := range []string{"level=WARN", "initiator=" + ftInitiator, "user=mallory"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("log line %q lacks %q", lines[0], want)
		}
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatal("the CHAP secret is in the log")
	}
}
