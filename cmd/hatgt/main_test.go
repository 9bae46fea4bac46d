package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hatgt/hatgt/config"
)

func TestParseServeFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
		check   func(*serveFlags) bool
	}{
		{[]string{"--dev"}, "", func(f *serveFlags) bool {
			return f.dev && f.iscsiAddr == config.DefaultPortal && f.dataDir == defaultDataDir
		}},
		{[]string{"--dev", "--iscsi-addr", "127.0.0.1:3261", "--data-dir", "/d", "--log-level", "debug"}, "", func(f *serveFlags) bool {
			return f.iscsiAddr == "127.0.0.1:3261" && f.dataDir == "/d" && f.logLevel.String() == "DEBUG"
		}},
		{[]string{"--config", "x.conf"}, "", func(f *serveFlags) bool { return f.configFile == "x.conf" && !f.dev }},
		{nil, "--dev, or --config", nil},
		{[]string{"--dev", "--config", "x"}, "not both", nil},
		{[]string{"--config", "x", "--iscsi-addr", ":1"}, "Portal lines", nil},
		{[]string{"--dev", "--log-level", "chatty"}, "--log-level", nil},
		{[]string{"--dev", "extra"}, "unexpected argument", nil},
		{[]string{"--dev", "--shutdown-timeout", "0s"}, "must be positive", nil},
		{[]string{"--dev", "--check"}, "--check needs --config", nil},
		{[]string{"--config", "x", "--check"}, "", func(f *serveFlags) bool { return f.check }},
	}
	for _, tc := range tests {
		f, err := parseServeFlags(tc.args, &bytes.Buffer{})
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tc.args, err)
		case tc.check != nil && !tc.check(f):
			t.Errorf("%v: parsed %+v", tc.args, f)
		}
	}
}

func TestConnectAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:3260":  "127.0.0.1:3260",
		":3260":         "127.0.0.1:3260",
		"[::]:3260":     "[::1]:3260",
		"10.0.0.5:3260": "10.0.0.5:3260",
		"[fd00::1]:1":   "[fd00::1]:1",
	} {
		if got := connectAddr(in); got != want {
			t.Errorf("connectAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDevConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfg, err := devConfig(dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, "dev")); err != nil || !st.IsDir() {
		t.Errorf("data dir not created: %v", err)
	}
	if len(cfg.Targets) != 1 || cfg.Targets[0].Name != devTargetName || len(cfg.Targets[0].LUNs) != 1 {
		t.Fatalf("dev config = %+v", cfg)
	}
	l := cfg.Targets[0].LUNs[0]
	if l.Size != 1<<30 || l.Sector != 512 || l.IOMode != config.WriteBack || !l.Thin || l.Path != filepath.Join(dir, "dev", "lun0.img") {
		t.Errorf("dev LUN = %+v", l)
	}
	if _, err := devConfig(dir, "no-port"); err == nil {
		t.Errorf("devConfig accepted an address without a port")
	}
}

func TestRunCommands(t *testing.T) {
	tests := []struct {
		args   []string
		status int
		out    string
	}{
		{[]string{"version"}, 0, "hatgt " + version},
		{[]string{"help"}, 0, "hatgt serve --dev"},
		{[]string{"help", "serve"}, 0, "--data-dir"},
		{[]string{"serve", "-h"}, 0, "--iscsi-addr"},
		{nil, 2, "Usage"},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"help", "frobnicate"}, 2, "unknown command"},
		{[]string{"serve"}, 2, "--dev, or --config"},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		status := run(tc.args, &stdout, &stderr)
		if status != tc.status || !strings.Contains(stdout.String()+stderr.String(), tc.out) {
			t.Errorf("run(%v) = %d, output:\n%s%s\nwant %d and %q", tc.args, status, stdout.String(), stderr.String(), tc.status, tc.out)
		}
	}
}

// fakeServed is a running node as the banner sees it.
type fakeServed struct {
	addrs []string
	size  int64
}

func (f fakeServed) Addrs() []string              { return f.addrs }
func (f fakeServed) LUNSize(string, uint64) int64 { return f.size }

func TestBannerNeverPrintsSecrets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	n := fakeServed{addrs: []string{l.Addr().String()}, size: 1 << 30}
	cfg := &config.Config{Targets: []config.Target{{
		Name:          "iqn.2026-11.io.x:y",
		IncomingUsers: []config.User{{Name: "alice", Secret: "very-secret-123"}},
		LUNs:          []config.LUN{{Number: 0, Path: "/x.img", Type: config.FileIO, Sector: 512, IOMode: config.WriteBack}},
	}}}
	var b bytes.Buffer
	printBanner(&b, cfg, n, false)
	out := b.String()
	if strings.Contains(out, "very-secret-123") {
		t.Errorf("banner prints the CHAP secret:\n%s", out)
	}
	cfg.DiscoveryUsers = []config.User{{Name: "joe", Secret: "discovery-secret"}}
	b.Reset()
	printBanner(&b, cfg, n, false)
	if d := b.String(); strings.Contains(d, "discovery-secret") || !strings.Contains(d, "iscsi-ls iscsi://joe%SECRET@") {
		t.Errorf("banner with discovery CHAP:\n%s", d)
	}
	cfg.DiscoveryUsers = nil
	for _, want := range []string{"portal  " + l.Addr().String(), "lun 0   1 GiB, write-back", "iscsi://alice%SECRET@" + l.Addr().String() + "/iqn.2026-11.io.x:y/0"} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
}

func TestServeCheck(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "h.conf")
	img := filepath.Join(dir, "a.img")
	text := "Target iqn.2026-11.io.x:y\nLun 0 Path=" + img + ",Size=1G\nIncomingUser u secret-123456\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if status := run([]string{"serve", "--config", conf, "--check"}, &stdout, &stderr); status != 0 {
		t.Fatalf("serve --check = %d\n%s%s", status, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"h.conf: OK, 1 targets, 1 LUNs", "IOMode=wt", "IncomingUser u *************\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("--check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secret-123456") {
		t.Errorf("--check prints the secret:\n%s", out)
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("--check created the LUN file (stat: %v)", err)
	}
	if err := os.WriteFile(conf, []byte(text+"Bogus\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	if status := run([]string{"serve", "--config", conf, "--check"}, &stdout, &stderr); status != 1 || !strings.Contains(stderr.String(), "h.conf:4: unknown directive") {
		t.Errorf("serve --check of a bad file = %d\n%s%s", status, stdout.String(), stderr.String())
	}
}
