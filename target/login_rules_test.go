package target

import (
	"crypto/md5"
	"encoding/hex"
	"net"
	"strings"
	"testing"
)

// Tests of the login rules an ietd.conf brings: discovery CHAP, several
// CHAP accounts, per-target negotiation values and digests, and the
// address rules of initiators.allow (AllowFrom).

func discoveryKeys(extra ...KV) []KV {
	return append([]KV{{"InitiatorName", testInitiator}, {"SessionType", "Discovery"}}, extra...)
}

// chapExchange runs AuthMethod and CHAP_A with first and returns the
// target's identifier and challenge.
func chapExchange(t *testing.T, l *loginPhase, first []KV) (byte, []byte) {
	t.Helper()
	resp, _ := step(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: append(first, KV{"AuthMethod", "CHAP,None"})})
	if k := respKeys(t, resp); k["AuthMethod"] != "CHAP" {
		t.Fatalf("AuthMethod answer %v, want CHAP", k)
	}
	resp, _ = step(t, l, loginReq{csg: 0, kvs: []KV{{"CHAP_A", "5"}}})
	k := respKeys(t, resp)
	c, err := hex.DecodeString(strings.TrimPrefix(k["CHAP_C"], "0x"))
	if err != nil || k["CHAP_I"] == "" {
		t.Fatalf("challenge %v", k)
	}
	id, _ := parseNumber(k["CHAP_I"])
	return byte(id), c
}

func TestDiscoveryCHAP(t *testing.T) {
	disc := &CHAPConfig{User: "joe", Secret: "discovery-secret", MutualUser: "portal", MutualSecret: "portal-secret-1"}

	t.Run("AuthMethod None refused", func(t *testing.T) {
		env := newFakeLoginEnv()
		env.discovery = disc
		expectFail(t, newCHAPLogin(env), loginReq{transit: true, csg: 0, nsg: 1, kvs: discoveryKeys(KV{"AuthMethod", "None"})}, LoginAuthFailed)
	})
	t.Run("security stage skipped", func(t *testing.T) {
		env := newFakeLoginEnv()
		env.discovery = disc
		expectFail(t, newCHAPLogin(env), loginReq{transit: true, csg: 1, nsg: 3, kvs: discoveryKeys()}, LoginAuthFailed)
	})
	t.Run("wrong secret", func(t *testing.T) {
		env := newFakeLoginEnv()
		env.discovery = disc
		l := newCHAPLogin(env)
		id, c := chapExchange(t, l, discoveryKeys())
		r := chapResp(md5.New, id, "not-the-secret", c)
		expectFail(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: []KV{{"CHAP_N", "joe"}, {"CHAP_R", "0x" + hex.EncodeToString(r)}}}, LoginAuthFailed)
	})
	t.Run("mutual CHAP succeeds", func(t *testing.T) {
		env := newFakeLoginEnv()
		env.discovery = disc
		l := newCHAPLogin(env)
		id, c := chapExchange(t, l, discoveryKeys())
		r := chapResp(md5.New, id, "discovery-secret", c)
		mine := []byte("initiator-challenge-16")
		resp, _ := step(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: []KV{
			{"CHAP_N", "joe"}, {"CHAP_R", "0x" + hex.EncodeToString(r)},
			{"CHAP_I", "9"}, {"CHAP_C", "0x" + hex.EncodeToString(mine)}}})
		k := respKeys(t, resp)
		if want := hex.EncodeToString(chapResp(md5.New, 9, "portal-secret-1", mine)); k["CHAP_N"] != "portal" || k["CHAP_R"] != "0x"+want {
			t.Fatalf("mutual answer %v", k)
		}
		_, done := step(t, l, loginReq{transit: true, csg: 1, nsg: 3})
		if !done || env.bound == nil || env.bound.SessionType != SessionDiscovery {
			t.Fatalf("discovery login not completed: done %v bound %+v", done, env.bound)
		}
	})
	t.Run("no discovery CHAP configured", func(t *testing.T) {
		env := newFakeLoginEnv()
		l := newCHAPLogin(env)
		resp, _ := step(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: discoveryKeys(KV{"AuthMethod", "CHAP,None"})})
		if k := respKeys(t, resp); k["AuthMethod"] != "None" {
			t.Fatalf("AuthMethod answer %v, want None", k)
		}
	})
	t.Run("normal sessions keep their own CHAP", func(t *testing.T) {
		env := newFakeLoginEnv()
		env.discovery = disc
		_, done := step(t, newCHAPLogin(env), loginReq{transit: true, csg: 1, nsg: 3, kvs: firstKeys()})
		if !done {
			t.Fatal("a normal session of a target without CHAP had to authenticate")
		}
	})
}

func TestCHAPMoreUsers(t *testing.T) {
	cfg := &CHAPConfig{User: "alice", Secret: "alice-secret-1", MoreUsers: []CHAPUser{{User: "bob", Secret: "bob-secret-123"}}}
	try := func(user, secret string) error {
		env := newFakeLoginEnv()
		env.targets[chapTarget] = &LoginTarget{Name: chapTarget, PortalGroupTag: 1, CHAP: cfg}
		l := newCHAPLogin(env)
		id, c := chapExchange(t, l, chapFirstKeys())
		r := chapResp(md5.New, id, secret, c)
		_, _, err := l.handle(loginReq{transit: true, csg: 0, nsg: 1, kvs: []KV{{"CHAP_N", user}, {"CHAP_R", "0x" + hex.EncodeToString(r)}}}.pdu())
		return err
	}
	for _, ok := range [][2]string{{"alice", "alice-secret-1"}, {"bob", "bob-secret-123"}} {
		if err := try(ok[0], ok[1]); err != nil {
			t.Errorf("%s with its own secret: %v", ok[0], err)
		}
	}
	for _, bad := range [][2]string{{"alice", "bob-secret-123"}, {"bob", "alice-secret-1"}, {"carol", "bob-secret-123"}} {
		if err := try(bad[0], bad[1]); err == nil {
			t.Errorf("%s with secret %s accepted", bad[0], bad[1])
		}
	}
}

func u32(v uint32) *uint32 { return &v }
func boolp(v bool) *bool   { return &v }

func TestTargetLoginParams(t *testing.T) {
	env := newFakeLoginEnv()
	env.targets[testTarget].Params = &LoginParams{
		MaxConnections: u32(1), InitialR2T: boolp(true), ImmediateData: boolp(false),
		MaxRecvDataSegmentLength: u32(8192), MaxXmitDataSegmentLength: u32(4096),
		MaxBurstLength: u32(65536), FirstBurstLength: u32(16384), MaxOutstandingR2T: u32(1),
		DefaultTime2Wait: u32(5), DefaultTime2Retain: u32(10),
	}
	l := newLoginPhase(env)
	resp, done := step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: firstKeys(
		KV{"MaxConnections", "8"}, KV{"InitialR2T", "No"}, KV{"ImmediateData", "Yes"},
		KV{"MaxRecvDataSegmentLength", "262144"}, KV{"MaxBurstLength", "1048576"},
		KV{"FirstBurstLength", "262144"}, KV{"MaxOutstandingR2T", "8"},
		KV{"DefaultTime2Wait", "2"}, KV{"DefaultTime2Retain", "20"})})
	if !done {
		t.Fatal("login not done")
	}
	k := respKeys(t, resp)
	want := map[string]string{
		"MaxConnections": "1", "InitialR2T": "Yes", "ImmediateData": "No", "MaxRecvDataSegmentLength": "8192",
		"MaxBurstLength": "65536", "MaxOutstandingR2T": "1",
		// InitialR2T=Yes and ImmediateData=No: no unsolicited data at all.
		"FirstBurstLength": "Irrelevant",
		"DefaultTime2Wait": "5", "DefaultTime2Retain": "10",
	}
	for key, v := range want {
		if k[key] != v {
			t.Errorf("%s = %q, want %q (answers %v)", key, k[key], v, k)
		}
	}
	s, c := env.bound.Session, env.bound.Conn
	if s.MaxConnections != 1 || !s.InitialR2T || s.ImmediateData || s.MaxBurstLength != 65536 || s.MaxOutstandingR2T != 1 || s.DefaultTime2Wait != 5 || s.DefaultTime2Retain != 10 {
		t.Errorf("session params %+v", s)
	}
	// MaxXmitDataSegmentLength bounds what the target sends below the
	// initiator's 262144; the target accepts its own 8192.
	if c.InitiatorMaxRecvDataSegmentLength != 4096 || c.TargetMaxRecvDataSegmentLength != 8192 {
		t.Errorf("conn params %+v, want send 4096, receive 8192", c)
	}

	// Another target of the same server keeps the server's values.
	env.targets["iqn.2026-01.io.hatgt:other"] = &LoginTarget{Name: "iqn.2026-01.io.hatgt:other", PortalGroupTag: 1}
	l = newLoginPhase(env)
	resp, _ = step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: []KV{
		{"InitiatorName", testInitiator}, {"TargetName", "iqn.2026-01.io.hatgt:other"},
		{"MaxConnections", "8"}, {"ImmediateData", "Yes"}, {"MaxBurstLength", "1048576"}}})
	if k := respKeys(t, resp); k["MaxConnections"] != "4" || k["ImmediateData"] != "Yes" || k["MaxBurstLength"] != "1048576" {
		t.Errorf("other target's answers %v, want the server's values", k)
	}
}

// TestTargetLoginParamsOffers: a target whose values are below the RFC
// defaults offers them itself when the initiator is silent.
func TestTargetLoginParamsOffers(t *testing.T) {
	env := newFakeLoginEnv()
	env.targets[testTarget].Params = &LoginParams{ImmediateData: boolp(false), MaxBurstLength: u32(16384), FirstBurstLength: u32(8192)}
	l := newLoginPhase(env)
	resp, done := step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: firstKeys()})
	if done {
		t.Fatal("done before the initiator answered the target's offers")
	}
	k := respKeys(t, resp)
	if k["ImmediateData"] != "No" || k["MaxBurstLength"] != "16384" || k["FirstBurstLength"] != "8192" {
		t.Fatalf("offers %v", k)
	}
	_, done = step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: []KV{{"ImmediateData", "No"}, {"MaxBurstLength", "16384"}, {"FirstBurstLength", "8192"}}})
	if !done || env.bound.Session.MaxBurstLength != 16384 || env.bound.Session.ImmediateData {
		t.Fatalf("done %v session %+v", done, env.bound.Session)
	}
}

func TestTargetDigestPolicy(t *testing.T) {
	login := func(policy DigestPolicy, offer []KV) (*loginPhase, *fakeLoginEnv, *PDU, bool, error) {
		env := newFakeLoginEnv()
		env.targets[testTarget].Params = &LoginParams{HeaderDigest: policy, DataDigest: policy}
		l := newLoginPhase(env)
		resp, done, err := l.handle(loginReq{transit: true, csg: 1, nsg: 3, kvs: firstKeys(offer...)}.pdu())
		return l, env, resp, done, err
	}
	t.Run("CRC32C required, initiator prefers None", func(t *testing.T) {
		_, env, resp, done, err := login(DigestCRC32C, []KV{{"HeaderDigest", "None,CRC32C"}, {"DataDigest", "None,CRC32C"}})
		if err != nil || !done {
			t.Fatalf("login: done %v err %v", done, err)
		}
		if k := respKeys(t, resp); k["HeaderDigest"] != "CRC32C" || k["DataDigest"] != "CRC32C" {
			t.Fatalf("answers %v", k)
		}
		if !env.bound.Conn.HeaderDigest || !env.bound.Conn.DataDigest {
			t.Fatalf("conn params %+v", env.bound.Conn)
		}
	})
	t.Run("CRC32C required, initiator offers None only", func(t *testing.T) {
		_, _, resp, _, err := login(DigestCRC32C, []KV{{"HeaderDigest", "None"}, {"DataDigest", "CRC32C"}})
		if err == nil || respStatus(resp) != LoginInitiatorError || !strings.Contains(err.Error(), "HeaderDigest") {
			t.Fatalf("login with HeaderDigest=None: err %v", err)
		}
	})
	t.Run("CRC32C required, initiator silent", func(t *testing.T) {
		l, env, resp, done, err := login(DigestCRC32C, nil)
		if err != nil || done {
			t.Fatalf("done %v err %v, want the target's offer", done, err)
		}
		if k := respKeys(t, resp); k["HeaderDigest"] != "CRC32C" || k["DataDigest"] != "CRC32C" {
			t.Fatalf("offers %v", k)
		}
		_, done = step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: []KV{{"HeaderDigest", "CRC32C"}, {"DataDigest", "CRC32C"}}})
		if !done || !env.bound.Conn.HeaderDigest || !env.bound.Conn.DataDigest {
			t.Fatalf("done %v conn %+v", done, env.bound.Conn)
		}
	})
	t.Run("CRC32C required, initiator rejects the offer", func(t *testing.T) {
		l, _, _, _, err := login(DigestCRC32C, nil)
		if err != nil {
			t.Fatal(err)
		}
		expectFail(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: []KV{{"HeaderDigest", "Reject"}, {"DataDigest", "CRC32C"}}}, LoginInitiatorError)
	})
	t.Run("None only", func(t *testing.T) {
		_, env, resp, done, err := login(DigestNone, []KV{{"HeaderDigest", "CRC32C,None"}, {"DataDigest", "CRC32C"}})
		if err != nil || !done {
			t.Fatalf("done %v err %v", done, err)
		}
		if k := respKeys(t, resp); k["HeaderDigest"] != "None" || k["DataDigest"] != "Reject" {
			t.Fatalf("answers %v", k)
		}
		if env.bound.Conn.HeaderDigest || env.bound.Conn.DataDigest {
			t.Fatalf("conn params %+v", env.bound.Conn)
		}
	})
}

func TestLoginParamsValidate(t *testing.T) {
	for _, p := range []*LoginParams{
		{MaxConnections: u32(0)}, {MaxBurstLength: u32(511)}, {MaxRecvDataSegmentLength: u32(1 << 24)},
		{MaxXmitDataSegmentLength: u32(100)}, {DefaultTime2Wait: u32(3601)}, {MaxOutstandingR2T: u32(0)},
		{MaxBurstLength: u32(4096), FirstBurstLength: u32(8192)}, {HeaderDigest: 7},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", *p)
		}
	}
	if err := (&LoginParams{MaxConnections: u32(1), DefaultTime2Wait: u32(0), MaxBurstLength: u32(512)}).Validate(); err != nil {
		t.Errorf("valid params: %v", err)
	}
	var none *LoginParams
	if err := none.Validate(); err != nil {
		t.Errorf("nil params: %v", err)
	}
}

func TestAllowFromRefusesByAddress(t *testing.T) {
	env := newFakeLoginEnv()
	env.remote = &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 40000}
	var asked net.Addr
	env.targets[testTarget].AllowFrom = func(name string, remote net.Addr) bool {
		asked = remote
		return remote.(*net.TCPAddr).IP.Equal(net.ParseIP("192.0.2.8"))
	}
	expectFail(t, newLoginPhase(env), loginReq{transit: true, csg: 1, nsg: 3, kvs: firstKeys()}, LoginForbidden)
	if asked != env.remote {
		t.Fatalf("AllowFrom asked with %v, want %v", asked, env.remote)
	}
	env.remote = &net.TCPAddr{IP: net.ParseIP("192.0.2.8"), Port: 40000}
	if _, done := step(t, newLoginPhase(env), loginReq{transit: true, csg: 1, nsg: 3, kvs: firstKeys()}); !done {
		t.Fatal("allowed address not logged in")
	}
}
