package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	chapSecret   = "chap-SECRET-abcdef"
	mutualSecret = "mutual-SECRET-uvwxyz"
)

func TestAPITokenAndSecrets(t *testing.T) {
	c := threeNodes(t)
	f := c.follower()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Changes without the token (or with a wrong one) are refused.
	for _, tok := range []string{"", "wrong-token"} {
		err := NewClient(f.cfg.APIAddr, tok, nil).CreateTarget(ctx, iqnA, "")
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "token") {
			t.Fatalf("token %q: got %v, want unauthorized", tok, err)
		}
		if strings.Contains(err.Error(), testToken) {
			t.Error("error message holds the token")
		}
	}
	resp, err := http.Post("http://"+f.cfg.APIAddr+"/v1/targets", "application/json", strings.NewReader(`{"iqn":"`+iqnA+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST without token: HTTP %d, want 401", resp.StatusCode)
	}

	cl := NewClient(f.cfg.APIAddr, testToken, nil)
	if err := cl.CreateTarget(ctx, iqnA, "alias-a"); err != nil {
		t.Fatal(err)
	}
	if err := cl.CreateLUN(ctx, iqnA, LUNRequest{LUN: 2, Size: 8 << 20, Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	if err := cl.AddACL(ctx, iqnA, ini1); err != nil {
		t.Fatal(err)
	}
	if err := cl.SetCHAP(ctx, iqnA, CHAP{User: "alice", Secret: chapSecret, MutualUser: "tgt", MutualSecret: mutualSecret}); err != nil {
		t.Fatal(err)
	}
	// A refused CHAP change must not echo the secret it was given.
	err = cl.SetCHAP(ctx, iqnA, CHAP{User: "bob", Secret: chapSecret, MutualUser: "x", MutualSecret: chapSecret})
	if !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), chapSecret) {
		t.Errorf("bad mutual CHAP: %v", err)
	}
	err = cl.SetCHAP(ctx, iqnB, CHAP{User: "bob", Secret: chapSecret})
	if !errors.Is(err, ErrUnknownTarget) || strings.Contains(err.Error(), chapSecret) {
		t.Errorf("CHAP on unknown target: %v", err)
	}
	if err := cl.CreateLUN(ctx, iqnA, LUNRequest{LUN: 3, Size: 1000}); !errors.Is(err, ErrBadSize) {
		t.Errorf("bad size over the API: %v", err)
	}
	if err := cl.CreateLUN(ctx, iqnA, LUNRequest{LUN: 3, Size: 4096, Replicas: 4}); !errors.Is(err, ErrNotEnoughNodes) {
		t.Errorf("4 replicas on 3 nodes: %v", err)
	}
	c.waitConverged("CHAP everywhere", func(s *State) bool {
		return s.Targets[iqnA] != nil && s.Targets[iqnA].CHAP != nil && len(s.Targets[iqnA].LUNs) == 1
	})

	// Status: readable without a token, never a secret. Poll until the
	// cluster looks settled (a loaded machine may re-elect meanwhile).
	var (
		raw string
		doc statusDoc
	)
	c.waitFor("a settled status", func() bool {
		raw = getRaw(t, "http://"+f.cfg.APIAddr+"/v1/status")
		doc = statusDoc{}
		if err := json.Unmarshal([]byte(raw), &doc); err != nil {
			t.Fatalf("status is not JSON: %v", err)
		}
		roles := map[string]int{}
		alive := 0
		for _, n := range doc.Nodes {
			roles[n.RaftRole]++
			if n.Alive != nil && *n.Alive && n.ISCSIPortal == "127.0.0.1:3260" {
				alive++
			}
		}
		return doc.Leader != "" && len(doc.Nodes) == 3 && roles["leader"] == 1 && roles["follower"] == 2 && alive == 3
	})
	for _, secret := range []string{chapSecret, mutualSecret, testToken} {
		if strings.Contains(raw, secret) {
			t.Fatalf("status holds a secret:\n%s", raw)
		}
	}
	if len(doc.Targets) != 1 || doc.Targets[0].IQN != iqnA || doc.Targets[0].CHAP.Secret != "set" ||
		len(doc.Targets[0].LUNs) != 1 || *doc.Targets[0].LUNs[0].LUN != 2 || len(doc.Targets[0].LUNs[0].Placement) != 2 ||
		doc.Targets[0].LUNs[0].Owner != doc.Targets[0].LUNs[0].Placement[0] {
		t.Errorf("targets in status: %+v", doc.Targets)
	}

	if err := cl.ClearCHAP(ctx, iqnA); err != nil {
		t.Fatal(err)
	}
	if err := cl.RemoveACL(ctx, iqnA, ini1); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteTarget(ctx, iqnA); !errors.Is(err, ErrTargetHasLUNs) {
		t.Errorf("delete target with LUN: %v", err)
	}
	if err := cl.DeleteLUN(ctx, iqnA, 2); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteTarget(ctx, iqnA); err != nil {
		t.Fatal(err)
	}

	// Secrets never reached any log line of any node.
	logs := c.logs.String()
	for _, secret := range []string{chapSecret, mutualSecret, testToken} {
		if strings.Contains(logs, secret) {
			t.Errorf("a log line holds secret %q", secret)
		}
	}
}

type statusDoc struct {
	Leader string `json:"leader"`
	Nodes  []struct {
		ID          string `json:"id"`
		RaftRole    string `json:"raft_role"`
		Alive       *bool  `json:"alive"`
		ISCSIPortal string `json:"iscsi_portal"`
	} `json:"nodes"`
	Targets []struct {
		IQN  string `json:"iqn"`
		CHAP struct {
			Secret, MutualSecret string
		} `json:"chap"`
		LUNs []struct {
			LUN       *uint64  `json:"lun"`
			Owner     string   `json:"owner"`
			Placement []string `json:"placement"`
		} `json:"luns"`
	} `json:"targets"`
}

func getRaw(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func TestAPIUnixSocketNeedsNoToken(t *testing.T) {
	c := newTestCluster(t)
	n := c.start("n1", true, nil)
	c.leader()
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- NewAPI(n.Node).Serve(ctx, ln) }()
	sock := filepath.Join(n.cfg.DataDir, SocketName)
	cl := NewClient("unix:"+sock, "", nil)
	c.waitFor("socket up", func() bool { _, err := cl.Status(ctx); return err == nil })
	if err := cl.CreateTarget(ctx, iqnA, ""); err != nil {
		t.Fatalf("change over the unix socket: %v", err)
	}
	// The TCP listener of the same server still wants the token.
	if err := NewClient(ln.Addr().String(), "", nil).CreateTarget(ctx, iqnB, ""); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("TCP without token: %v", err)
	}
	st, err := cl.Status(ctx)
	if err != nil || len(st.Targets) != 1 || st.Leader != "n1" || st.Nodes[0].RaftRole != "leader" {
		t.Errorf("status %+v, %v", st, err)
	}
	// Leave through the API: the node stops and Serve returns by itself.
	if err := cl.Leave(ctx, LeaveOptions{}); err != nil {
		t.Fatalf("leave: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve still running after the node left")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := testConfig("n1")
	ok.DataDir, ok.RaftAddr, ok.GossipAddr, ok.APIAddr = "/tmp/x", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	bad := map[string]func(*Config){
		"node id":       func(c *Config) { c.NodeID = "" },
		"data dir":      func(c *Config) { c.DataDir = "" },
		"raft addr":     func(c *Config) { c.RaftAddr = "nope" },
		"raft wildcard": func(c *Config) { c.RaftAddr = "0.0.0.0:1" },
		"api no host":   func(c *Config) { c.APIAddr = ":3270" },
		"gossip key":    func(c *Config) { c.GossipKey = []byte("short") },
		"lease > hb":    func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout },
		"election < hb": func(c *Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 },
		"apply <= elec": func(c *Config) { c.ApplyTimeout = c.ElectionTimeout },
		"probe timeout": func(c *Config) { c.GossipProbeTimeout = c.GossipProbeInterval },
	}
	for name, mod := range bad {
		c := ok
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: invalid config accepted", name)
		}
	}
	d := DefaultConfig()
	if d.LeaderLeaseTimeout < d.HeartbeatTimeout {
		t.Errorf("DefaultConfig: a leader steps down after %v without a quorum, before a follower would call an election (%v): a stall of the leader alone makes a leaderless gap and ends its owner lease",
			d.LeaderLeaseTimeout, d.HeartbeatTimeout)
	}
	d.NodeID, d.DataDir, d.RaftAddr, d.GossipAddr, d.APIAddr = "a", "/x", "10.0.0.1:1", "0.0.0.0:2", "10.0.0.1:3"
	if err := d.Validate(); err != nil {
		t.Errorf("DefaultConfig with addresses: %v", err)
	}
}

func TestCheckExposure(t *testing.T) {
	for _, tc := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:3270", "", true},
		{"[::1]:3270", "", true},
		{"localhost:3270", "", true},
		{"0.0.0.0:3270", "", false},
		{":3270", "", false},
		{"10.0.0.1:3270", "", false},
		{"10.0.0.1:3270", "tok", true},
		{"bad", "", false},
	} {
		err := CheckExposure(tc.addr, tc.token)
		if (err == nil) != tc.ok {
			t.Errorf("CheckExposure(%q, token set %v) = %v", tc.addr, tc.token != "", err)
		}
	}
}

func TestParseGossipKey(t *testing.T) {
	for in, n := range map[string]int{
		"MDEyMzQ1Njc4OWFiY2RlZg==":                       16,
		"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n": 32,
		"MDEyMzQ1Njc4OWFiY2RlZg":                         16,
	} {
		k, err := ParseGossipKey(in)
		if err != nil || len(k) != n {
			t.Errorf("ParseGossipKey(%q) = %d bytes, %v; want %d", in, len(k), err, n)
		}
	}
	for _, in := range []string{"", "not base64!", "c2hvcnQ="} {
		if _, err := ParseGossipKey(in); err == nil || (in != "" && strings.Contains(err.Error(), in)) {
			t.Errorf("ParseGossipKey(%q): %v", in, err)
		}
	}
}

func TestForwardWithMismatchedToken(t *testing.T) {
	c := newTestCluster(t)
	n1 := c.start("n1", true, nil)
	c.leader()
	n2 := c.start("n2", false, func(cfg *Config) { cfg.Token = "another-token-456" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// n2 cannot even ask to join: its token is not the cluster's.
	// The error names the member that refused and what to fix.
	if err := n2.JoinVia(ctx, n1.cfg.APIAddr); !errors.Is(err, ErrUnauthorized) ||
		!strings.Contains(err.Error(), n1.cfg.APIAddr+" refused this node's admin token") || !strings.Contains(err.Error(), "HATGT_TOKEN") {
		t.Fatalf("join with another token: %v", err)
	}
	// Admitted by hand (as if the tokens had matched at join time), its
	// forwarded changes are refused with an error that names the cause.
	if _, err := n1.AddNode(ctx, n2.Info()); err != nil {
		t.Fatal(err)
	}
	c.waitFor("n2 follows n1", func() bool { id, _ := n2.Leader(); return id == "n1" })
	err := c.apply(n2, CmdTargetCreate, TargetCreate{IQN: iqnA})
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "same token") {
		t.Fatalf("forward with another token: %v", err)
	}
	for _, tok := range []string{testToken, "another-token-456"} {
		if strings.Contains(err.Error(), tok) {
			t.Errorf("error holds a token: %v", err)
		}
	}
}
