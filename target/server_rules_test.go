package target

import (
	"net"
	"sync"
	"testing"

	"github.com/hatgt/hatgt/scsi"
)

// sendTargetsAll asks a logged-in discovery session for every target and
// returns the names it lists.
func sendTargetsAll(t *testing.T, in *initiator) []string {
	t.Helper()
	p := NewPDU(OpTextReq)
	p.SetImmediate(true)
	p.SetFinal(true)
	p.SetITT(in.nextITT())
	p.SetTTT(ReservedTag)
	p.SetCmdSN(in.cmdSN)
	p.Data = EncodeText([]KV{{"SendTargets", "All"}})
	in.send(p)
	r := in.mustRecv()
	if r.Opcode() != OpTextResp {
		t.Fatalf("got %v, want a Text Response", r.Opcode())
	}
	kvs, err := ParseText(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, kv := range kvs {
		if kv.Key == "TargetName" {
			names = append(names, kv.Value)
		}
	}
	return names
}

func TestServerDiscoveryCHAP(t *testing.T) {
	env := newFTEnv(t, func(c *ServerConfig) {
		c.DiscoveryCHAP = &CHAPConfig{User: "joe", Secret: "discovery-secret"}
	})
	if st, err := ftDial(t, env.addr).login(loginOpts{discovery: true}); err != nil || st != LoginAuthFailed {
		t.Fatalf("discovery without CHAP: status %#04x err %v, want auth failure", uint16(st), err)
	}
	// Normal sessions of a target without CHAP are not concerned.
	ftDial(t, env.addr).mustLogin(loginOpts{})
	env.srv.SetDiscoveryCHAP(nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{discovery: true})
	if names := sendTargetsAll(t, in); len(names) != 1 || names[0] != ftIQN {
		t.Fatalf("SendTargets after SetDiscoveryCHAP(nil) = %v", names)
	}
}

func TestUpdateTargetKeepsSessions(t *testing.T) {
	env := newFTEnv(t, nil)
	in := ftDial(t, env.addr)
	in.mustLogin(loginOpts{})
	in.ready()

	if err := env.srv.UpdateTarget(TargetConfig{Name: ftIQN, Alias: "renamed", ACL: []string{"iqn.2026-11.io.hatgt:someone-else"}}); err != nil {
		t.Fatal(err)
	}
	// The running session carries on.
	if r := in.exec(cdbTUR, false, nil, 0); r.status != scsi.StatusGood {
		t.Fatalf("TUR on the running session after UpdateTarget: %v", r.status)
	}
	// New logins follow the new ACL, and discovery no longer lists it.
	if st, err := ftDial(t, env.addr).login(loginOpts{}); err != nil || st != LoginForbidden {
		t.Fatalf("login after the ACL dropped the initiator: status %#04x err %v", uint16(st), err)
	}
	d := ftDial(t, env.addr)
	d.mustLogin(loginOpts{discovery: true})
	if names := sendTargetsAll(t, d); len(names) != 0 {
		t.Fatalf("SendTargets lists %v to an initiator the ACL refuses", names)
	}

	// The login parameters change too.
	if err := env.srv.UpdateTarget(TargetConfig{Name: ftIQN, Login: &LoginParams{MaxBurstLength: u32(65536)}}); err != nil {
		t.Fatal(err)
	}
	in2 := ftDial(t, env.addr)
	in2.mustLogin(loginOpts{isid: &[6]byte{0x80, 0, 0, 0, 0, 2}})
	if got := in2.neg["MaxBurstLength"]; got != "65536" {
		t.Fatalf("MaxBurstLength after UpdateTarget = %q, want 65536", got)
	}

	for _, bad := range []TargetConfig{
		{Name: "iqn.2026-11.io.hatgt:absent"},
		{Name: ftIQN, Device: scsi.NewDevice(scsi.DeviceConfig{})},
		{Name: ftIQN, PortalGroupTag: 9},
		{Name: ftIQN, Login: &LoginParams{MaxConnections: u32(0)}},
	} {
		if err := env.srv.UpdateTarget(bad); err == nil {
			t.Errorf("UpdateTarget(%+v) = nil", bad)
		}
	}
}

func TestServerAllowFrom(t *testing.T) {
	env := newFTEnv(t, nil)
	var mu sync.Mutex
	var asked net.Addr
	allow := false
	if err := env.srv.UpdateTarget(TargetConfig{Name: ftIQN, AllowFrom: func(name string, remote net.Addr) bool {
		mu.Lock()
		defer mu.Unlock()
		asked = remote
		return allow
	}}); err != nil {
		t.Fatal(err)
	}
	in := ftDial(t, env.addr)
	if st, err := in.login(loginOpts{}); err != nil || st != LoginForbidden {
		t.Fatalf("login refused by AllowFrom: status %#04x err %v", uint16(st), err)
	}
	mu.Lock()
	if asked == nil || asked.String() != in.nc.LocalAddr().String() {
		t.Fatalf("AllowFrom asked with %v, want the initiator's address %v", asked, in.nc.LocalAddr())
	}
	mu.Unlock()
	d := ftDial(t, env.addr)
	d.mustLogin(loginOpts{discovery: true})
	if names := sendTargetsAll(t, d); len(names) != 0 {
		t.Fatalf("SendTargets lists %v, refused by AllowFrom", names)
	}
	mu.Lock()
	allow = true
	mu.Unlock()
	if names := sendTargetsAll(t, d); len(names) != 1 {
		t.Fatalf("SendTargets lists %v once AllowFrom allows", names)
	}
}
