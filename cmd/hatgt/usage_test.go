package main

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/hatgt/hatgt/config"
)

// TestHelpVersion: "hatgt help version" (and "version --help") describe
// the command instead of calling it unknown.
func TestHelpVersion(t *testing.T) {
	for _, args := range [][]string{{"help", "version"}, {"version", "--help"}, {"help", "help"}} {
		var stdout, stderr bytes.Buffer
		if status := run(args, &stdout, &stderr); status != 0 || !strings.Contains(stdout.String(), "hatgt version") || stderr.Len() > 0 {
			t.Errorf("hatgt %v = %d\nstdout:\n%s\nstderr:\n%s", args, status, stdout.String(), stderr.String())
		}
	}
}

// TestBadFlagIsOneLine: a flag that does not exist is one error line
// naming the help command, not the error, the whole usage, and the error
// again.
func TestBadFlagIsOneLine(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--dev", "--bogus"},
		{"serve", "--node-id", "n1", "--bind", "127.0.0.1", "--bogus"},
		{"dev", "--nodes", "1", "--bogus"},
		{"status", "--bogus"},
	} {
		var stdout, stderr bytes.Buffer
		status := run(args, &stdout, &stderr)
		out := stdout.String() + stderr.String()
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if status == 0 || len(lines) != 1 || strings.Count(out, "-bogus") != 1 || !strings.Contains(out, "flag provided but not defined") {
			t.Errorf("hatgt %v = %d, output:\n%s\nwant one line naming -bogus once", args, status, out)
		}
		if args[0] != "status" && !strings.Contains(out, "help") {
			t.Errorf("hatgt %v: the error does not say where the flags are listed:\n%s", args, out)
		}
	}
}

// TestServeModeMix: single-node flags with cluster flags are refused with
// what each mode is, not "flag provided but not defined: -config".
func TestServeModeMix(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--config", "f.conf", "--node-id", "x"}, "--config is single-node mode"},
		{[]string{"serve", "--node-id", "x", "--bind", "127.0.0.1", "--config=f.conf"}, "--config is single-node mode"},
		{[]string{"serve", "--dev", "--bootstrap"}, "--dev is single-node mode"},
		{[]string{"serve", "--join", "10.0.0.1:3270", "--iscsi-addr", "0.0.0.0:3260"}, "--iscsi-addr is the portal of single-node mode"},
	} {
		var stdout, stderr bytes.Buffer
		status := run(tc.args, &stdout, &stderr)
		out := stderr.String()
		if status != 2 || !strings.Contains(out, tc.want) || !strings.Contains(out, "cannot be combined with cluster flags") ||
			strings.Contains(out, "not defined") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("hatgt %v = %d, stderr:\n%s\nwant 2 and one line saying %q", tc.args, status, out, tc.want)
		}
	}
}

// TestBannerPortalIsTheTruth: a wildcard IPv4 portal is served by Go on a
// dual-stack socket that reports [::]; the banner shows the address the
// user gave, says what it covers, and gives local clients IPv4 loopback.
func TestBannerPortalIsTheTruth(t *testing.T) {
	for _, tc := range []struct{ configured, actual, shown, connect string }{
		{"0.0.0.0:3260", "[::]:3260", "0.0.0.0:3260 (every IPv4 and IPv6 address of this machine)", "127.0.0.1:3260"},
		{"0.0.0.0:0", "[::]:40123", "0.0.0.0:40123 (every IPv4 and IPv6 address of this machine)", "127.0.0.1:40123"},
		{"0.0.0.0:3260", "0.0.0.0:3260", "0.0.0.0:3260 (every IPv4 address of this machine)", "127.0.0.1:3260"},
		{"[::]:3260", "[::]:3260", "[::]:3260 (every IPv4 and IPv6 address of this machine)", "[::1]:3260"},
		{"127.0.0.1:0", "127.0.0.1:3999", "127.0.0.1:3999", "127.0.0.1:3999"},
	} {
		shown, connect := describePortal(tc.configured, tc.actual)
		if shown != tc.shown || connect != tc.connect {
			t.Errorf("describePortal(%s, %s) = %q, %q; want %q, %q", tc.configured, tc.actual, shown, connect, tc.shown, tc.connect)
		}
	}
	// What the listener really reports for 0.0.0.0 on this machine.
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	n := fakeServed{addrs: []string{l.Addr().String()}, size: 1 << 30}
	cfg := &config.Config{Portals: []string{"0.0.0.0:0"}, Targets: []config.Target{{Name: devTargetName,
		LUNs: []config.LUN{{Number: 0, Path: "/x.img", Type: config.FileIO, Sector: 512, IOMode: config.WriteBack}}}}}
	var b bytes.Buffer
	printBanner(&b, cfg, n, true)
	out := b.String()
	if !strings.Contains(out, "portal  0.0.0.0:"+port+" (every IPv4") || strings.Contains(out, "[::]") ||
		!strings.Contains(out, fmt.Sprintf("iscsi-ls -s iscsi://127.0.0.1:%s", port)) {
		t.Errorf("banner for 0.0.0.0 (listener %s):\n%s", l.Addr(), out)
	}
}

// TestDevBannerCommandsWork: what "hatgt dev" tells to run must work as
// written: discovery through a portal (any node answers it), not
// iscsi-ls -s, which logs in to the first portal listed and fails its
// TEST UNIT READY on a standby copy.
func TestDevBannerCommandsWork(t *testing.T) {
	var b bytes.Buffer
	ns := []*devNode{{id: "n1", ip: "127.0.0.11"}, {id: "n2", ip: "127.0.0.12"}, {id: "n3", ip: "127.0.0.13"}}
	printDevCluster(&b, ns, "/data", "hatgt")
	out := b.String()
	if strings.Contains(out, "iscsi-ls -s") {
		t.Errorf("the banner tells to run iscsi-ls -s, which fails through a standby portal:\n%s", out)
	}
	for _, want := range []string{"export HATGT_ADDR=127.0.0.11:3270", "hatgt lun create iqn.2026-11.io.hatgt:demo --lun 0 --size 1G",
		"iscsi-ls iscsi://127.0.0.11:3260"} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
}
