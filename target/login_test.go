package target

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
)

// fakeLoginEnv is a LoginEnv with a fixed set of targets that records the
// session it was asked to bind.
type fakeLoginEnv struct {
	targets    map[string]*LoginTarget
	sess       SessionParams
	conn       ConnParams
	tsih       uint16
	bindStatus LoginStatus
	bound      *LoginResult
	binds      int
	discovery  *CHAPConfig // DiscoveryCHAP's answer
	remote     net.Addr
}

const (
	testInitiator = "iqn.2026-01.io.hatgt:init"
	testTarget    = "iqn.2026-01.io.hatgt:disk1"
)

func newFakeLoginEnv() *fakeLoginEnv {
	return &fakeLoginEnv{
		targets: map[string]*LoginTarget{
			testTarget: {Name: testTarget, Alias: "disk one", PortalGroupTag: 3},
			"iqn.2026-01.io.hatgt:acl": {
				Name: "iqn.2026-01.io.hatgt:acl", PortalGroupTag: 1,
				AllowInitiator: func(n string) bool { return n == "iqn.2026-01.io.hatgt:friend" },
			},
		},
		sess: SessionParams{
			MaxConnections: 4, InitialR2T: false, ImmediateData: true,
			MaxBurstLength: 1 << 20, FirstBurstLength: 1 << 18,
			DefaultTime2Wait: 2, DefaultTime2Retain: 20, MaxOutstandingR2T: 8,
			DataPDUInOrder: true, DataSequenceInOrder: true, CmdSNWindow: 64,
		},
		conn: ConnParams{HeaderDigest: true, DataDigest: true, TargetMaxRecvDataSegmentLength: 262144},
		tsih: 0x1234,
	}
}

func (e *fakeLoginEnv) LookupTarget(name string) (*LoginTarget, bool) {
	t, ok := e.targets[name]
	return t, ok
}

func (e *fakeLoginEnv) BindSession(r *LoginResult) (uint16, LoginStatus) {
	e.binds++
	c := *r
	e.bound = &c
	if e.bindStatus != LoginSuccess {
		return 0, e.bindStatus
	}
	return e.tsih, LoginSuccess
}

func (e *fakeLoginEnv) Defaults() (SessionParams, ConnParams) { return e.sess, e.conn }

func (e *fakeLoginEnv) DiscoveryCHAP() *CHAPConfig { return e.discovery }

func (e *fakeLoginEnv) RemoteAddr() net.Addr { return e.remote }

var testISID = [6]byte{0x80, 0x12, 0x34, 0x56, 0x00, 0x01}

// loginReq builds a Login Request. flags holds T/C; csg/nsg the stages.
type loginReq struct {
	transit, cont bool
	csg, nsg      uint8
	kvs           []KV
	data          []byte // raw text instead of kvs
	tsih          uint16
	isid          *[6]byte
	cid           uint16
	itt           uint32
	versionMin    uint8
}

func (r loginReq) pdu() *PDU {
	p := NewPDU(OpLoginReq)
	p.SetImmediate(true)
	f := r.csg<<2 | r.nsg
	if r.transit {
		f |= loginFlagTransit
	}
	if r.cont {
		f |= loginFlagContinue
	}
	p.SetFlags(f)
	p.BHS[3] = r.versionMin
	isid := testISID
	if r.isid != nil {
		isid = *r.isid
	}
	copy(p.BHS[8:14], isid[:])
	p.SetU16(14, r.tsih)
	p.SetITT(r.itt)
	p.SetU16(20, r.cid)
	p.SetCmdSN(100)
	p.SetExpStatSN(500)
	if r.data != nil {
		p.Data = r.data
	} else {
		p.Data = EncodeText(r.kvs)
	}
	return p
}

// respFlags decodes the T/C/CSG/NSG bits of a Login Response.
func respFlags(p *PDU) (transit, cont bool, csg, nsg uint8) {
	f := p.Flags()
	return f&loginFlagTransit != 0, f&loginFlagContinue != 0, f >> 2 & 3, f & 3
}

func respStatus(p *PDU) LoginStatus { return LoginStatus(p.BHS[36])<<8 | LoginStatus(p.BHS[37]) }

// respKeys parses a response text into a map, failing on duplicates.
func respKeys(t *testing.T, p *PDU) map[string]string {
	t.Helper()
	kvs, err := ParseText(p.Data)
	if err != nil {
		t.Fatalf("response text %q: %v", p.Data, err)
	}
	m := map[string]string{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// step sends one request and expects it to be accepted.
func step(t *testing.T, l *loginPhase, r loginReq) (*PDU, bool) {
	t.Helper()
	resp, done, err := l.handle(r.pdu())
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	if resp == nil {
		t.Fatal("no response")
	}
	if resp.Opcode() != OpLoginResp {
		t.Fatalf("response opcode %v", resp.Opcode())
	}
	if st := respStatus(resp); st != LoginSuccess {
		t.Fatalf("status 0x%04x on accepted request", st)
	}
	return resp, done
}

// expectFail sends one request and expects the login to fail with st.
func expectFail(t *testing.T, l *loginPhase, r loginReq, st LoginStatus) *PDU {
	t.Helper()
	resp, done, err := l.handle(r.pdu())
	if err == nil {
		t.Fatalf("login accepted (resp %q), want status 0x%04x", resp.Data, st)
	}
	var le *LoginError
	if !errors.As(err, &le) || le.Status != st {
		t.Fatalf("error %v, want status 0x%04x", err, st)
	}
	if done {
		t.Fatal("done with an error")
	}
	if resp == nil || respStatus(resp) != st {
		t.Fatalf("response status, want 0x%04x: %v", st, resp)
	}
	if len(resp.Data) != 0 {
		t.Fatalf("failure response carries text %q", resp.Data)
	}
	if _, _, err := l.handle(r.pdu()); err == nil {
		t.Fatal("request after a failed login accepted")
	}
	return resp
}

func firstKeys(extra ...KV) []KV {
	return append([]KV{{"InitiatorName", testInitiator}, {"TargetName", testTarget}, {"SessionType", "Normal"}}, extra...)
}

func TestLoginNormalSession(t *testing.T) {
	env := newFakeLoginEnv()
	l := newLoginPhase(env)

	resp, done := step(t, l, loginReq{transit: true, csg: 0, nsg: 1, itt: 7,
		kvs: firstKeys(KV{"InitiatorAlias", "host1"}, KV{"AuthMethod", "None"})})
	if done {
		t.Fatal("done after the security stage")
	}
	tr, c, csg, nsg := respFlags(resp)
	if !tr || c || csg != 0 || nsg != 1 {
		t.Fatalf("flags T=%v C=%v CSG=%d NSG=%d, want T 0->1", tr, c, csg, nsg)
	}
	k := respKeys(t, resp)
	if k["AuthMethod"] != "None" || k["TargetPortalGroupTag"] != "3" || k["TargetAlias"] != "disk one" {
		t.Fatalf("first response keys %v", k)
	}
	if resp.ITT() != 7 || resp.StatSN() != 500 || resp.ExpCmdSN() != 100 || resp.MaxCmdSN() != 100+64-1 {
		t.Fatalf("ITT %d StatSN %d ExpCmdSN %d MaxCmdSN %d", resp.ITT(), resp.StatSN(), resp.ExpCmdSN(), resp.MaxCmdSN())
	}
	if resp.BHS[2] != 0 || resp.BHS[3] != 0 || !bytes.Equal(resp.BHS[8:14], testISID[:]) || resp.U16(14) != 0 {
		t.Fatalf("version/ISID/TSIH fields % x", resp.BHS[:16])
	}

	resp, done = step(t, l, loginReq{transit: true, csg: 1, nsg: 3, itt: 8, kvs: []KV{
		{"HeaderDigest", "CRC32C,None"},
		{"DataDigest", "None"},
		{"MaxConnections", "1"},
		{"InitialR2T", "No"},
		{"ImmediateData", "Yes"},
		{"MaxRecvDataSegmentLength", "65536"},
		{"MaxBurstLength", "16776192"},
		{"FirstBurstLength", "262144"},
		{"DefaultTime2Wait", "0"},
		{"DefaultTime2Retain", "0"},
		{"MaxOutstandingR2T", "16"},
		{"DataPDUInOrder", "Yes"},
		{"DataSequenceInOrder", "Yes"},
		{"ErrorRecoveryLevel", "2"},
		{"IFMarker", "No"},
		{"OFMarker", "No"},
		{"X-com.example.magic", "1"},
	}})
	if !done {
		t.Fatal("not done after T 1->3")
	}
	tr, c, csg, nsg = respFlags(resp)
	if !tr || c || csg != 1 || nsg != 3 {
		t.Fatalf("flags T=%v C=%v CSG=%d NSG=%d, want T 1->3", tr, c, csg, nsg)
	}
	if resp.StatSN() != 501 || resp.U16(14) != 0x1234 || resp.ITT() != 8 {
		t.Fatalf("StatSN %d TSIH %#x ITT %d", resp.StatSN(), resp.U16(14), resp.ITT())
	}
	want := map[string]string{
		"HeaderDigest": "CRC32C", "DataDigest": "None", "MaxConnections": "1",
		"InitialR2T": "No", "ImmediateData": "Yes", "MaxBurstLength": "1048576",
		"FirstBurstLength": "262144", "DefaultTime2Wait": "2", "DefaultTime2Retain": "0",
		"MaxOutstandingR2T": "8", "DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes",
		"ErrorRecoveryLevel": "0", "IFMarker": "No", "OFMarker": "No",
		"X-com.example.magic": "NotUnderstood", "MaxRecvDataSegmentLength": "262144",
	}
	got := respKeys(t, resp)
	for key, v := range want {
		if got[key] != v {
			t.Errorf("%s=%q, want %q", key, got[key], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("response keys %v, want exactly %v", got, want)
	}

	r := l.result()
	if r == nil {
		t.Fatal("no result")
	}
	if env.binds != 1 || env.bound.InitiatorName != testInitiator {
		t.Fatalf("BindSession calls %d, bound %+v", env.binds, env.bound)
	}
	if r.InitiatorName != testInitiator || r.InitiatorAlias != "host1" || r.SessionType != SessionNormal ||
		r.Target == nil || r.Target.Name != testTarget || r.ISID != testISID || r.TSIH != 0 || r.CmdSN != 100 {
		t.Fatalf("result %+v", r)
	}
	if r.NextStatSN != 502 {
		t.Fatalf("NextStatSN %d, want 502", r.NextStatSN)
	}
	wantSess := SessionParams{MaxConnections: 1, InitialR2T: false, ImmediateData: true, MaxBurstLength: 1 << 20,
		FirstBurstLength: 262144, DefaultTime2Wait: 2, DefaultTime2Retain: 0, MaxOutstandingR2T: 8,
		DataPDUInOrder: true, DataSequenceInOrder: true, TargetPortalGroupTag: 3}
	if r.Session != wantSess {
		t.Fatalf("session params %+v, want %+v", r.Session, wantSess)
	}
	wantConn := ConnParams{HeaderDigest: true, DataDigest: false, InitiatorMaxRecvDataSegmentLength: 65536, TargetMaxRecvDataSegmentLength: 262144}
	if r.Conn != wantConn {
		t.Fatalf("conn params %+v, want %+v", r.Conn, wantConn)
	}
	if _, _, err := l.handle(loginReq{csg: 3}.pdu()); err == nil {
		t.Fatal("request after the login accepted")
	}
}

func TestLoginDiscoverySkipsSecurity(t *testing.T) {
	env := newFakeLoginEnv()
	l := newLoginPhase(env)
	resp, done := step(t, l, loginReq{transit: true, csg: 1, nsg: 3,
		kvs: []KV{{"InitiatorName", testInitiator}, {"SessionType", "Discovery"}, {"MaxRecvDataSegmentLength", "32768"}}})
	if !done {
		t.Fatal("discovery login not done")
	}
	k := respKeys(t, resp)
	if _, ok := k["TargetPortalGroupTag"]; ok {
		t.Fatal("TargetPortalGroupTag sent to a discovery session")
	}
	if k["MaxRecvDataSegmentLength"] != "262144" {
		t.Fatalf("keys %v", k)
	}
	r := l.result()
	if r.SessionType != SessionDiscovery || r.Target != nil || r.Conn.InitiatorMaxRecvDataSegmentLength != 32768 {
		t.Fatalf("result %+v", r)
	}
}

func TestLoginSecurityStraightToFullFeature(t *testing.T) {
	env := newFakeLoginEnv()
	l := newLoginPhase(env)
	resp, done := step(t, l, loginReq{transit: true, csg: 0, nsg: 3, kvs: firstKeys(KV{"AuthMethod", "CHAP,None"})})
	if !done {
		t.Fatal("not done")
	}
	if tr, _, csg, nsg := respFlags(resp); !tr || csg != 0 || nsg != 3 {
		t.Fatal("want T 0->3")
	}
	k := respKeys(t, resp)
	if k["AuthMethod"] != "None" || k["MaxRecvDataSegmentLength"] != "262144" {
		t.Fatalf("keys %v", k)
	}
	if r := l.result(); r.Session.InitialR2T != true || r.Session.MaxBurstLength != 262144 {
		t.Fatalf("defaults not kept: %+v", r.Session)
	}
}

func TestLoginTargetWithholdsTransitWhileNotAsked(t *testing.T) {
	l := newLoginPhase(newFakeLoginEnv())
	resp, _ := step(t, l, loginReq{csg: 0, kvs: firstKeys()})
	if tr, _, csg, _ := respFlags(resp); tr || csg != 0 {
		t.Fatal("target transited without T from the initiator")
	}
	resp, _ = step(t, l, loginReq{csg: 0, transit: true, nsg: 1})
	if tr, _, _, nsg := respFlags(resp); !tr || nsg != 1 {
		t.Fatal("no transit on T")
	}
	resp, _ = step(t, l, loginReq{csg: 1, kvs: []KV{{"HeaderDigest", "None"}}})
	if tr, _, csg, _ := respFlags(resp); tr || csg != 1 {
		t.Fatal("transit without T")
	}
	if _, done := step(t, l, loginReq{csg: 1, transit: true, nsg: 3}); !done {
		t.Fatal("not done")
	}
	// MaxRecvDataSegmentLength was declared once, in the first
	// operational response.
	if got := l.result().Conn.TargetMaxRecvDataSegmentLength; got != 262144 {
		t.Fatalf("target MRDSL %d", got)
	}
}

func TestLoginOffersTargetLimits(t *testing.T) {
	env := newFakeLoginEnv()
	env.sess.ImmediateData = false
	env.sess.MaxBurstLength = 65536
	env.sess.FirstBurstLength = 16384
	l := newLoginPhase(env)
	step(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: firstKeys()})
	resp, done := step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: []KV{{"MaxBurstLength", "262144"}}})
	if done {
		t.Fatal("done before the initiator answered the target's offers")
	}
	if tr, _, _, _ := respFlags(resp); tr {
		t.Fatal("transit with offers outstanding")
	}
	k := respKeys(t, resp)
	if k["MaxBurstLength"] != "65536" || k["ImmediateData"] != "No" || k["FirstBurstLength"] != "16384" {
		t.Fatalf("keys %v", k)
	}
	_, done = step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: []KV{{"ImmediateData", "No"}, {"FirstBurstLength", "8192"}}})
	if !done {
		t.Fatal("not done")
	}
	s := l.result().Session
	if s.ImmediateData || s.MaxBurstLength != 65536 || s.FirstBurstLength != 8192 {
		t.Fatalf("session %+v", s)
	}
}

func TestLoginOffersFromSecurityStageForceOperational(t *testing.T) {
	env := newFakeLoginEnv()
	env.sess.ImmediateData = false
	l := newLoginPhase(env)
	resp, done := step(t, l, loginReq{transit: true, csg: 0, nsg: 3, kvs: firstKeys()})
	if done {
		t.Fatal("done although the target must offer ImmediateData=No")
	}
	if tr, _, _, nsg := respFlags(resp); !tr || nsg != 1 {
		t.Fatalf("want transit to the operational stage instead")
	}
	if _, done := step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: []KV{{"ImmediateData", "No"}}}); !done {
		t.Fatal("not done")
	}
	if l.result().Session.ImmediateData {
		t.Fatal("ImmediateData still Yes")
	}
}

func TestLoginContinuation(t *testing.T) {
	l := newLoginPhase(newFakeLoginEnv())
	text := EncodeText(firstKeys(KV{"AuthMethod", "None"}))
	cut := bytes.IndexByte(text, '=') + 5 // in the middle of a value
	resp, done := step(t, l, loginReq{cont: true, csg: 0, data: text[:cut]})
	if done || len(resp.Data) != 0 {
		t.Fatalf("continuation answered with %q", resp.Data)
	}
	if tr, c, _, _ := respFlags(resp); tr || c {
		t.Fatal("continuation response has T or C")
	}
	if resp.StatSN() != 500 {
		t.Fatalf("StatSN %d", resp.StatSN())
	}
	resp, _ = step(t, l, loginReq{transit: true, csg: 0, nsg: 1, data: text[cut:]})
	if resp.StatSN() != 501 {
		t.Fatalf("StatSN %d", resp.StatSN())
	}
	if k := respKeys(t, resp); k["AuthMethod"] != "None" {
		t.Fatalf("keys %v", k)
	}
	if tr, _, _, nsg := respFlags(resp); !tr || nsg != 1 {
		t.Fatal("no transit")
	}
}

func TestLoginLongResponseIsContinued(t *testing.T) {
	l := newLoginPhase(newFakeLoginEnv())
	kvs := firstKeys(KV{"AuthMethod", "None"})
	for i := 0; i < 200; i++ {
		kvs = append(kvs, KV{"X-com.example." + strings.Repeat("k", 40) + string(rune('a'+i%26)) + string(rune('a'+i/26)), "1"})
	}
	resp, _ := step(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: kvs})
	var text []byte
	for i := 0; ; i++ {
		if len(resp.Data) > loginMaxSend {
			t.Fatalf("response of %d bytes", len(resp.Data))
		}
		text = append(text, resp.Data...)
		tr, c, _, _ := respFlags(resp)
		if tr {
			t.Fatal("transit while the response continues")
		}
		if !c {
			break
		}
		if i > 10 {
			t.Fatal("response never ends")
		}
		resp, _ = step(t, l, loginReq{transit: true, csg: 0, nsg: 1})
	}
	got, err := ParseText(text)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, kv := range got {
		if kv.Value == valNotUnderstood {
			n++
		}
	}
	if n != 200 {
		t.Fatalf("%d NotUnderstood answers, want 200", n)
	}
	resp, _ = step(t, l, loginReq{transit: true, csg: 0, nsg: 1})
	if tr, _, _, nsg := respFlags(resp); !tr || nsg != 1 {
		t.Fatal("no transit after the continued response")
	}
}

func TestLoginFailures(t *testing.T) {
	other := [6]byte{1, 2, 3, 4, 5, 6}
	tests := []struct {
		name  string
		setup func(env *fakeLoginEnv)
		pre   []loginReq // accepted requests first
		req   loginReq
		want  LoginStatus
	}{
		{name: "missing InitiatorName", req: loginReq{csg: 0, kvs: []KV{{"TargetName", testTarget}}}, want: LoginMissingParameter},
		{name: "empty InitiatorName", req: loginReq{csg: 0, kvs: []KV{{"InitiatorName", ""}, {"TargetName", testTarget}}}, want: LoginMissingParameter},
		{name: "missing TargetName", req: loginReq{csg: 0, kvs: []KV{{"InitiatorName", testInitiator}}}, want: LoginMissingParameter},
		{name: "unknown target", req: loginReq{csg: 0, kvs: []KV{{"InitiatorName", testInitiator}, {"TargetName", "iqn.nope"}}}, want: LoginTargetNotFound},
		{name: "ACL refusal", req: loginReq{csg: 0, kvs: []KV{{"InitiatorName", testInitiator}, {"TargetName", "iqn.2026-01.io.hatgt:acl"}}}, want: LoginForbidden},
		{name: "bad SessionType", req: loginReq{csg: 0, kvs: []KV{{"InitiatorName", testInitiator}, {"SessionType", "Weird"}}}, want: LoginSessionTypeNotSupp},
		{name: "Version-min 1", req: loginReq{csg: 0, versionMin: 1, kvs: firstKeys()}, want: LoginUnsupportedVersion},
		{name: "T and C", req: loginReq{transit: true, cont: true, csg: 0, nsg: 1, kvs: firstKeys()}, want: LoginInitiatorError},
		{name: "first CSG full feature", req: loginReq{csg: 3, kvs: firstKeys()}, want: LoginInitiatorError},
		{name: "first CSG reserved", req: loginReq{csg: 2, kvs: firstKeys()}, want: LoginInitiatorError},
		{name: "transit 1->1", req: loginReq{transit: true, csg: 1, nsg: 1, kvs: firstKeys()}, want: LoginInitiatorError},
		{name: "transit 0->0", req: loginReq{transit: true, csg: 0, nsg: 0, kvs: firstKeys()}, want: LoginInitiatorError},
		{name: "transit 0->2", req: loginReq{transit: true, csg: 0, nsg: 2, kvs: firstKeys()}, want: LoginInitiatorError},
		{name: "malformed text", req: loginReq{csg: 0, data: []byte("InitiatorName\x00")}, want: LoginInitiatorError},
		{name: "duplicate key in one request", req: loginReq{csg: 0, data: []byte("InitiatorName=a\x00InitiatorName=a\x00")}, want: LoginInitiatorError},
		{
			name: "stage goes back", pre: []loginReq{{transit: true, csg: 0, nsg: 1, kvs: firstKeys()}},
			req: loginReq{csg: 0}, want: LoginInitiatorError,
		},
		{
			name: "stage skips without transit", pre: []loginReq{{csg: 0, kvs: firstKeys()}},
			req: loginReq{csg: 1}, want: LoginInitiatorError,
		},
		{
			name: "ISID changes", pre: []loginReq{{csg: 0, kvs: firstKeys()}},
			req: loginReq{csg: 0, isid: &other}, want: LoginInitiatorError,
		},
		{
			name: "TSIH changes", pre: []loginReq{{csg: 0, kvs: firstKeys()}},
			req: loginReq{csg: 0, tsih: 9}, want: LoginInitiatorError,
		},
		{
			name: "CID changes", pre: []loginReq{{csg: 0, kvs: firstKeys()}},
			req: loginReq{csg: 0, cid: 2}, want: LoginInitiatorError,
		},
		{
			name: "key repeated in a later request", pre: []loginReq{{transit: true, csg: 0, nsg: 1, kvs: firstKeys()}, {csg: 1, kvs: []KV{{"MaxBurstLength", "8192"}}}},
			req: loginReq{csg: 1, kvs: []KV{{"MaxBurstLength", "8192"}}}, want: LoginInitiatorError,
		},
		{
			name: "TargetName redeclared", pre: []loginReq{{csg: 0, kvs: []KV{{"InitiatorName", testInitiator}, {"SessionType", "Discovery"}}}},
			req: loginReq{csg: 0, kvs: []KV{{"TargetName", testTarget}}}, want: LoginInitiatorError,
		},
		{
			name: "AuthMethod in operational stage", pre: []loginReq{{transit: true, csg: 0, nsg: 1, kvs: firstKeys()}},
			req: loginReq{csg: 1, kvs: []KV{{"AuthMethod", "None"}}}, want: LoginInitiatorError,
		},
		{
			name: "AuthMethod without None for a target without CHAP",
			req:  loginReq{csg: 0, kvs: firstKeys(KV{"AuthMethod", "CHAP"})}, want: LoginAuthFailed,
		},
		{
			name: "CHAP keys without AuthMethod",
			req:  loginReq{csg: 0, kvs: firstKeys(KV{"CHAP_A", "5"})}, want: LoginAuthFailed,
		},
		{
			name:  "BindSession refuses",
			setup: func(env *fakeLoginEnv) { env.bindStatus = LoginTooManyConnections },
			req:   loginReq{transit: true, csg: 1, nsg: 3, kvs: firstKeys()}, want: LoginTooManyConnections,
		},
		{
			name: "text too long over continuations",
			pre: []loginReq{
				{cont: true, csg: 0, data: bytes.Repeat([]byte("a"), MaxTextLen/2)},
				{cont: true, csg: 0, data: bytes.Repeat([]byte("a"), MaxTextLen/2)},
			},
			req: loginReq{cont: true, csg: 0, data: []byte("a")}, want: LoginInitiatorError,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newFakeLoginEnv()
			if tt.setup != nil {
				tt.setup(env)
			}
			l := newLoginPhase(env)
			for _, r := range tt.pre {
				step(t, l, r)
			}
			resp := expectFail(t, l, tt.req, tt.want)
			if l.result() != nil {
				t.Fatal("result after a failed login")
			}
			if tr, _, _, _ := respFlags(resp); tr {
				t.Fatal("failure response with T")
			}
		})
	}
}

func TestLoginRejectsNonLoginPDU(t *testing.T) {
	l := newLoginPhase(newFakeLoginEnv())
	p := NewPDU(OpSCSICommand)
	p.SetITT(77)
	resp, _, err := l.handle(p)
	var le *LoginError
	if !errors.As(err, &le) || le.Status != LoginInvalidDuringLogin {
		t.Fatalf("err %v", err)
	}
	if resp == nil || resp.Opcode() != OpLoginResp || respStatus(resp) != LoginInvalidDuringLogin || resp.ITT() != 77 {
		t.Fatalf("resp %+v", resp)
	}
}

func TestLoginNonLeadingConnection(t *testing.T) {
	env := newFakeLoginEnv()
	l := newLoginPhase(env)
	step(t, l, loginReq{transit: true, csg: 0, nsg: 1, tsih: 0x1234, cid: 2, kvs: firstKeys()})
	resp, done := step(t, l, loginReq{transit: true, csg: 1, nsg: 3, tsih: 0x1234, cid: 2, kvs: []KV{
		{"MaxBurstLength", "8192"}, {"InitialR2T", "Yes"}, {"HeaderDigest", "None"}, {"MaxRecvDataSegmentLength", "4096"},
	}})
	if !done {
		t.Fatal("not done")
	}
	k := respKeys(t, resp)
	if k["MaxBurstLength"] != valIrrelevant || k["InitialR2T"] != valIrrelevant || k["HeaderDigest"] != "None" {
		t.Fatalf("keys %v", k)
	}
	r := l.result()
	if r.TSIH != 0x1234 || r.CID != 2 || r.Conn.InitiatorMaxRecvDataSegmentLength != 4096 {
		t.Fatalf("result %+v", r)
	}
	if resp.U16(14) != 0x1234 {
		t.Fatalf("TSIH %#x", resp.U16(14))
	}
}

func TestLoginStatSNFromFirstRequest(t *testing.T) {
	l := newLoginPhase(newFakeLoginEnv())
	req := loginReq{transit: true, csg: 1, nsg: 3, kvs: firstKeys()}.pdu()
	req.SetExpStatSN(0xffffffff)
	resp, done, err := l.handle(req)
	if err != nil || !done {
		t.Fatal(err)
	}
	if resp.StatSN() != 0xffffffff || l.result().NextStatSN != 0 {
		t.Fatalf("StatSN %d next %d: must wrap", resp.StatSN(), l.result().NextStatSN)
	}
}

func TestLoginDefaultWindow(t *testing.T) {
	env := newFakeLoginEnv()
	env.sess = SessionParams{InitialR2T: true, ImmediateData: true, DefaultTime2Wait: 2, DefaultTime2Retain: 20}
	env.conn = ConnParams{}
	l := newLoginPhase(env)
	resp, done := step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: firstKeys(KV{"MaxBurstLength", "16777215"})})
	if !done {
		t.Fatal("not done")
	}
	if resp.MaxCmdSN() != 100+defaultCmdSNWindow-1 {
		t.Fatalf("MaxCmdSN %d", resp.MaxCmdSN())
	}
	k := respKeys(t, resp)
	if k["MaxBurstLength"] != "262144" || k["MaxRecvDataSegmentLength"] != "8192" {
		t.Fatalf("zero Defaults must mean RFC defaults: %v", k)
	}
}

// TestLoginReplaysLibiscsi replays the login requests libiscsi sent to
// tgt (testdata/README.md) through the login phase.
func TestLoginReplaysLibiscsi(t *testing.T) {
	const captured = "iqn.2026-01.io.hatgt:capture"
	streams := capturedStreams(t)
	requests := func(name string) []*PDU {
		pdus, _ := splitPDUs(t, name, streams[name])
		var out []*PDU
		for _, p := range pdus {
			if p.Opcode() == OpLoginReq {
				out = append(out, p)
			}
		}
		return out
	}
	newEnv := func(chap *CHAPConfig) *fakeLoginEnv {
		env := newFakeLoginEnv()
		env.targets[captured] = &LoginTarget{Name: captured, PortalGroupTag: 1, CHAP: chap}
		return env
	}
	// Every offered key except the declarations gets exactly one answer.
	checkAnswered := func(t *testing.T, req, resp *PDU) {
		t.Helper()
		offered, err := ParseText(req.Data)
		if err != nil {
			t.Fatal(err)
		}
		answers := respKeys(t, resp)
		for _, kv := range offered {
			switch kv.Key {
			case "InitiatorName", "TargetName", "SessionType", "MaxRecvDataSegmentLength":
				continue
			}
			if v, ok := answers[kv.Key]; !ok || v == valNotUnderstood || v == valReject {
				t.Errorf("%s=%s answered %q", kv.Key, kv.Value, v)
			}
		}
	}

	t.Run("discovery", func(t *testing.T) {
		reqs := requests("libiscsi-discovery.i2t")
		l := newLoginPhase(newEnv(nil))
		resp, done, err := l.handle(reqs[0])
		if err != nil || !done {
			t.Fatalf("done %v err %v", done, err)
		}
		checkAnswered(t, reqs[0], resp)
		r := l.result()
		if r.SessionType != SessionDiscovery || r.Conn.InitiatorMaxRecvDataSegmentLength != 262144 {
			t.Fatalf("result %+v", r)
		}
	})
	t.Run("normal", func(t *testing.T) {
		reqs := requests("libiscsi-normal.i2t")
		l := newLoginPhase(newEnv(nil))
		resp, done, err := l.handle(reqs[0])
		if err != nil || !done {
			t.Fatalf("done %v err %v", done, err)
		}
		checkAnswered(t, reqs[0], resp)
		k := respKeys(t, resp)
		if k["TargetPortalGroupTag"] != "1" || k["HeaderDigest"] != "None" || k["InitialR2T"] != "No" {
			t.Fatalf("answers %v", k)
		}
		if r := l.result(); r.Target.Name != captured || r.Session.FirstBurstLength != 262144 || r.Session.InitialR2T {
			t.Fatalf("result %+v", r)
		}
	})
	t.Run("chap", func(t *testing.T) {
		reqs := requests("libiscsi-chap.i2t")
		if len(reqs) != 4 {
			t.Fatalf("%d login requests", len(reqs))
		}
		l := newLoginPhase(newEnv(&CHAPConfig{User: "alice", Secret: "s3cret-initiator-pw"}))
		l.rand = &seqReader{}
		resp, _, err := l.handle(reqs[0])
		if err != nil {
			t.Fatal(err)
		}
		if k := respKeys(t, resp); k["AuthMethod"] != "CHAP" || k["TargetPortalGroupTag"] != "1" {
			t.Fatalf("answers %v", k)
		}
		if tr, _, _, _ := respFlags(resp); tr {
			t.Fatal("transit before CHAP")
		}
		resp, _, err = l.handle(reqs[1])
		if err != nil {
			t.Fatal(err)
		}
		if k := respKeys(t, resp); k["CHAP_A"] != "5" || k["CHAP_I"] != "0" || len(k["CHAP_C"]) != 2+32 {
			t.Fatalf("answers %v", k)
		}
		// The captured response answers tgt's challenge, not ours.
		_, _, err = l.handle(reqs[2])
		var le *LoginError
		if !errors.As(err, &le) || le.Status != LoginAuthFailed {
			t.Fatalf("replayed CHAP response: %v", err)
		}
	})
}
