package target

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"strconv"
	"strings"
	"testing"
)

const (
	chapTarget       = "iqn.2026-01.io.hatgt:secure"
	chapUser         = "alice"
	chapSecret       = "s3cret-initiator-pw"
	chapMutualUser   = "disk-secure"
	chapMutualSecret = "s3cret-target-pw"
)

// seqReader is a deterministic random source: 0, 1, 2, ...
type seqReader struct{ n byte }

func (r *seqReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.n
		r.n++
	}
	return len(p), nil
}

func chapEnv(mutual bool) *fakeLoginEnv {
	env := newFakeLoginEnv()
	cfg := &CHAPConfig{User: chapUser, Secret: chapSecret}
	if mutual {
		cfg.MutualUser, cfg.MutualSecret = chapMutualUser, chapMutualSecret
	}
	env.targets[chapTarget] = &LoginTarget{Name: chapTarget, PortalGroupTag: 1, CHAP: cfg}
	return env
}

func chapFirstKeys(extra ...KV) []KV {
	return append([]KV{{"InitiatorName", testInitiator}, {"TargetName", chapTarget}}, extra...)
}

func newCHAPLogin(env *fakeLoginEnv) *loginPhase {
	l := newLoginPhase(env)
	l.rand = &seqReader{}
	return l
}

// chapChallenge runs AuthMethod and CHAP_A and returns the target's
// identifier and challenge.
func chapChallenge(t *testing.T, l *loginPhase, alg string) (byte, []byte) {
	t.Helper()
	resp, _ := step(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: chapFirstKeys(KV{"AuthMethod", "CHAP,None"})})
	if tr, _, _, _ := respFlags(resp); tr {
		t.Fatal("transit before CHAP")
	}
	if k := respKeys(t, resp); k["AuthMethod"] != "CHAP" {
		t.Fatalf("AuthMethod answer %v", k)
	}
	resp, _ = step(t, l, loginReq{csg: 0, kvs: []KV{{"CHAP_A", alg}}})
	k := respKeys(t, resp)
	id, err := strconv.Atoi(k["CHAP_I"])
	if err != nil || id < 0 || id > 255 {
		t.Fatalf("CHAP_I %q", k["CHAP_I"])
	}
	if !strings.HasPrefix(k["CHAP_C"], "0x") {
		t.Fatalf("CHAP_C %q", k["CHAP_C"])
	}
	c, err := hex.DecodeString(k["CHAP_C"][2:])
	if err != nil || len(c) < 16 {
		t.Fatalf("CHAP_C %q: %v", k["CHAP_C"], err)
	}
	return byte(id), c
}

func chapResp(h func() hash.Hash, id byte, secret string, c []byte) []byte {
	x := h()
	x.Write([]byte{id})
	x.Write([]byte(secret))
	x.Write(c)
	return x.Sum(nil)
}

func TestCHAPDeterministicChallenge(t *testing.T) {
	l := newCHAPLogin(chapEnv(false))
	id, c := chapChallenge(t, l, "5")
	// The injected source gives the identifier first, then the challenge.
	if id != 0 || !bytes.Equal(c, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}) {
		t.Fatalf("id %d challenge % x", id, c)
	}
}

func TestCHAPSuccess(t *testing.T) {
	tests := []struct {
		name   string
		alg    string
		h      func() hash.Hash
		encode func([]byte) string
	}{
		{"MD5 hex", "5", md5.New, func(b []byte) string { return "0x" + hex.EncodeToString(b) }},
		{"MD5 upper hex", "5", md5.New, func(b []byte) string { return "0X" + strings.ToUpper(hex.EncodeToString(b)) }},
		{"MD5 base64", "5", md5.New, func(b []byte) string { return "0b" + base64.StdEncoding.EncodeToString(b) }},
		{"SHA-256", "7", sha256.New, func(b []byte) string { return "0x" + hex.EncodeToString(b) }},
		{"first supported of list", "6,99,5,7", md5.New, func(b []byte) string { return "0x" + hex.EncodeToString(b) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := chapEnv(false)
			l := newCHAPLogin(env)
			id, c := chapChallenge(t, l, tt.alg)
			r := chapResp(tt.h, id, chapSecret, c)
			resp, _ := step(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: []KV{{"CHAP_N", chapUser}, {"CHAP_R", tt.encode(r)}}})
			if tr, _, _, nsg := respFlags(resp); !tr || nsg != 1 {
				t.Fatal("no transit after CHAP")
			}
			if len(resp.Data) != 0 {
				t.Fatalf("one-way CHAP answered %q", resp.Data)
			}
			if _, done := step(t, l, loginReq{transit: true, csg: 1, nsg: 3}); !done {
				t.Fatal("not done")
			}
		})
	}
}

func TestCHAPMutual(t *testing.T) {
	l := newCHAPLogin(chapEnv(true))
	id, c := chapChallenge(t, l, "5")
	myChallenge := []byte("initiator-challenge-0123")
	resp, _ := step(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: []KV{
		{"CHAP_N", chapUser},
		{"CHAP_R", "0x" + hex.EncodeToString(chapResp(md5.New, id, chapSecret, c))},
		{"CHAP_I", "77"},
		{"CHAP_C", "0x" + hex.EncodeToString(myChallenge)},
	}})
	k := respKeys(t, resp)
	want := "0x" + hex.EncodeToString(chapResp(md5.New, 77, chapMutualSecret, myChallenge))
	if k["CHAP_N"] != chapMutualUser || k["CHAP_R"] != want {
		t.Fatalf("mutual answer %v, want CHAP_R %s", k, want)
	}
	if tr, _, _, _ := respFlags(resp); !tr {
		t.Fatal("no transit")
	}
}

func TestCHAPFailures(t *testing.T) {
	good := func(id byte, c []byte) string { return "0x" + hex.EncodeToString(chapResp(md5.New, id, chapSecret, c)) }
	tests := []struct {
		name   string
		mutual bool
		keys   func(id byte, c []byte) []KV
	}{
		{"wrong secret", false, func(id byte, c []byte) []KV {
			return []KV{{"CHAP_N", chapUser}, {"CHAP_R", "0x" + hex.EncodeToString(chapResp(md5.New, id, "guess", c))}}
		}},
		{"wrong user", false, func(id byte, c []byte) []KV { return []KV{{"CHAP_N", "mallory"}, {"CHAP_R", good(id, c)}} }},
		{"wrong id", false, func(id byte, c []byte) []KV { return []KV{{"CHAP_N", chapUser}, {"CHAP_R", good(id+1, c)}} }},
		{"missing CHAP_R", false, func(id byte, c []byte) []KV { return []KV{{"CHAP_N", chapUser}} }},
		{"missing CHAP_N", false, func(id byte, c []byte) []KV { return []KV{{"CHAP_R", good(id, c)}} }},
		{"malformed CHAP_R", false, func(id byte, c []byte) []KV { return []KV{{"CHAP_N", chapUser}, {"CHAP_R", "abc"}} }},
		{"truncated CHAP_R", false, func(id byte, c []byte) []KV { return []KV{{"CHAP_N", chapUser}, {"CHAP_R", good(id, c)[:20]}} }},
		{"no response at all", false, func(id byte, c []byte) []KV { return nil }},
		{"reflected challenge", true, func(id byte, c []byte) []KV {
			return []KV{{"CHAP_N", chapUser}, {"CHAP_R", good(id, c)}, {"CHAP_I", "1"}, {"CHAP_C", "0x" + hex.EncodeToString(c)}}
		}},
		{"mutual not configured", false, func(id byte, c []byte) []KV {
			return []KV{{"CHAP_N", chapUser}, {"CHAP_R", good(id, c)}, {"CHAP_I", "1"}, {"CHAP_C", "0x0102030405060708"}}
		}},
		{"mutual CHAP_I without CHAP_C", true, func(id byte, c []byte) []KV {
			return []KV{{"CHAP_N", chapUser}, {"CHAP_R", good(id, c)}, {"CHAP_I", "1"}}
		}},
		{"mutual CHAP_I out of range", true, func(id byte, c []byte) []KV {
			return []KV{{"CHAP_N", chapUser}, {"CHAP_R", good(id, c)}, {"CHAP_I", "256"}, {"CHAP_C", "0x0102"}}
		}},
		{"CHAP_A again", false, func(id byte, c []byte) []KV {
			return []KV{{"CHAP_A", "5"}, {"CHAP_N", chapUser}, {"CHAP_R", good(id, c)}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newCHAPLogin(chapEnv(tt.mutual))
			id, c := chapChallenge(t, l, "5")
			resp, done, err := l.handle(loginReq{transit: true, csg: 0, nsg: 1, kvs: tt.keys(id, c)}.pdu())
			var le *LoginError
			want := LoginAuthFailed
			if tt.name == "CHAP_A again" {
				want = LoginInitiatorError // a key sent twice
			}
			if !errors.As(err, &le) || le.Status != want || done {
				t.Fatalf("err %v done %v, want status 0x%04x", err, done, want)
			}
			if respStatus(resp) != want || len(resp.Data) != 0 {
				t.Fatalf("response status 0x%04x data %q", respStatus(resp), resp.Data)
			}
			for _, s := range []string{chapSecret, chapMutualSecret} {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error %q reveals a secret", err)
				}
			}
		})
	}
}

func TestCHAPRequired(t *testing.T) {
	tests := []struct {
		name string
		pre  []loginReq
		req  loginReq
	}{
		{"offers only None", nil, loginReq{csg: 0, kvs: chapFirstKeys(KV{"AuthMethod", "None"})}},
		{"skips the security stage", nil, loginReq{transit: true, csg: 1, nsg: 3, kvs: chapFirstKeys()}},
		{"transits without AuthMethod", nil, loginReq{transit: true, csg: 0, nsg: 1, kvs: chapFirstKeys()}},
		{"jumps to full feature without AuthMethod", nil, loginReq{transit: true, csg: 0, nsg: 3, kvs: chapFirstKeys()}},
		{"unsupported algorithm", []loginReq{{csg: 0, kvs: chapFirstKeys(KV{"AuthMethod", "CHAP"})}}, loginReq{csg: 0, kvs: []KV{{"CHAP_A", "6,99"}}}},
		{"transits instead of CHAP_A", []loginReq{{csg: 0, kvs: chapFirstKeys(KV{"AuthMethod", "CHAP"})}}, loginReq{transit: true, csg: 0, nsg: 1}},
		{"CHAP_R before CHAP_A", []loginReq{{csg: 0, kvs: chapFirstKeys(KV{"AuthMethod", "CHAP"})}}, loginReq{csg: 0, kvs: []KV{{"CHAP_N", chapUser}, {"CHAP_R", "0x00"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newCHAPLogin(chapEnv(false))
			for _, r := range tt.pre {
				step(t, l, r)
			}
			expectFail(t, l, tt.req, LoginAuthFailed)
		})
	}
}

func TestCHAPAuthMethodAndAlgorithmInOneRequest(t *testing.T) {
	l := newCHAPLogin(chapEnv(false))
	resp, _ := step(t, l, loginReq{csg: 0, kvs: chapFirstKeys(KV{"AuthMethod", "CHAP"}, KV{"CHAP_A", "5"})})
	k := respKeys(t, resp)
	if k["AuthMethod"] != "CHAP" || k["CHAP_A"] != "5" || k["CHAP_C"] == "" {
		t.Fatalf("keys %v", k)
	}
}

func TestCHAPNotOfferedToDiscovery(t *testing.T) {
	l := newCHAPLogin(chapEnv(false))
	resp, _ := step(t, l, loginReq{transit: true, csg: 0, nsg: 1, kvs: []KV{
		{"InitiatorName", testInitiator}, {"SessionType", "Discovery"}, {"AuthMethod", "CHAP,None"},
	}})
	if k := respKeys(t, resp); k["AuthMethod"] != "None" {
		t.Fatalf("keys %v", k)
	}
}

func TestCHAPRandomFailure(t *testing.T) {
	l := newLoginPhase(chapEnv(false))
	l.rand = bytes.NewReader([]byte{1, 2}) // too short for a challenge
	step(t, l, loginReq{csg: 0, kvs: chapFirstKeys(KV{"AuthMethod", "CHAP"})})
	expectFail(t, l, loginReq{csg: 0, kvs: []KV{{"CHAP_A", "5"}}}, LoginAuthFailed)
}

func TestDecodeBinary(t *testing.T) {
	tests := []struct {
		in   string
		want []byte
		err  bool
	}{
		{in: "0x0102ff", want: []byte{1, 2, 0xff}},
		{in: "0x102", want: []byte{1, 2}},
		{in: "0bAQL/", want: []byte{1, 2, 0xff}},
		{in: "0bAQI=", want: []byte{1, 2}},
		{in: "0bAQI", want: []byte{1, 2}},
		{in: "0x", err: true},
		{in: "0xzz", err: true},
		{in: "0b!!!!", err: true},
		{in: "1234", err: true},
		{in: "0x" + strings.Repeat("00", maxCHAPBinary+1), err: true},
	}
	for _, tt := range tests {
		got, err := decodeBinary(tt.in)
		if tt.err != (err != nil) || !bytes.Equal(got, tt.want) {
			t.Errorf("decodeBinary(%q) = % x, %v", tt.in, got, err)
		}
	}
}
