package target

import "testing"

// TestLoginRepeatedIdentityKeys: libiscsi repeats InitiatorName and
// SessionType in a later login PDU (discovery with CHAP credentials). The
// same value again is accepted; a changed value fails the login.
func TestLoginRepeatedIdentityKeys(t *testing.T) {
	first := []KV{{"InitiatorName", testInitiator}, {"SessionType", "Discovery"}, {"AuthMethod", "CHAP,None"}}

	l := newLoginPhase(newFakeLoginEnv())
	step(t, l, loginReq{csg: 0, nsg: 1, kvs: first})
	_, done := step(t, l, loginReq{transit: true, csg: 0, nsg: 1,
		kvs: []KV{{"InitiatorName", testInitiator}, {"SessionType", "Discovery"}}})
	if done {
		t.Fatal("done before the operational stage")
	}
	if _, done = step(t, l, loginReq{transit: true, csg: 1, nsg: 3, kvs: []KV{{"InitiatorName", testInitiator}}}); !done {
		t.Fatal("discovery login not done")
	}
	if r := l.result(); r.InitiatorName != testInitiator || r.SessionType != SessionDiscovery {
		t.Fatalf("result %+v", r)
	}

	l = newLoginPhase(newFakeLoginEnv())
	step(t, l, loginReq{csg: 0, nsg: 1, kvs: first})
	expectFail(t, l, loginReq{transit: true, csg: 0, nsg: 1,
		kvs: []KV{{"InitiatorName", "iqn.2026-11.test:someone-else"}}}, LoginInitiatorError)
}
