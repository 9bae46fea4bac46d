package main

import (
	"os"
	"strings"
	"testing"
)

func TestIsClusterServe(t *testing.T) {
	for args, want := range map[string]bool{
		"--dev":                             false,
		"--config f":                        false,
		"--node-id n1 --bind 127.0.0.1":     true,
		"--bootstrap":                       true,
		"-join=127.0.0.1:3270":              true,
		"--data-dir x --iscsi-addr a:1":     false,
		"--bind=10.0.0.1 --data-dir /tmp/x": true,
	} {
		if got := isClusterServe(strings.Fields(args)); got != want {
			t.Errorf("isClusterServe(%q) = %v, want %v", args, got, want)
		}
	}
}

func TestParseClusterServeFlags(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	f, err := parseClusterServeFlags(strings.Fields("--node-id n1 --bind 127.0.0.11 --bootstrap --api-port 4000"), env(nil), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if f.addr(f.ports.iscsi) != "127.0.0.11:3260" || f.addr(f.ports.api) != "127.0.0.11:4000" ||
		f.addr(f.ports.raft) != "127.0.0.11:3271" || f.addr(f.ports.gossip) != "127.0.0.11:3272" || f.addr(f.ports.repl) != "127.0.0.11:3273" {
		t.Errorf("addresses: %+v", f.ports)
	}
	if f.resyncRate != 100<<20 {
		t.Errorf("default resync rate %d, want 100 MiB/s", f.resyncRate)
	}
	for arg, want := range map[string]int64{"--resync-rate 1G": 1 << 30, "--resync-rate 0": 0, "--resync-rate 4096": 4096} {
		g, err := parseClusterServeFlags(append(strings.Fields("--node-id n1 --bind 127.0.0.11"), strings.Fields(arg)...), env(nil), os.Stderr)
		if err != nil || g.resyncRate != want {
			t.Errorf("%s: rate %v, err %v; want %d", arg, g, err, want)
		}
	}
	f, err = parseClusterServeFlags(strings.Fields("--node-id n1 --bind ::1 --join [::1]:3270"), env(map[string]string{
		"HATGT_TOKEN": "tok\n", "HATGT_GOSSIP_KEY": "MDEyMzQ1Njc4OWFiY2RlZg==",
	}), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if f.token != "tok" || len(f.gossipKey) != 16 || f.addr(f.ports.api) != "[::1]:3270" {
		t.Errorf("token %q, key %d bytes, api %s", f.token, len(f.gossipKey), f.addr(f.ports.api))
	}
	for _, bad := range []string{
		"--bind 127.0.0.1",            // no node id
		"--node-id n1",                // no bind
		"--node-id n1 --bind 0.0.0.0", // wildcard
		"--node-id n1 --bind 127.0.0.1 --bootstrap --join 127.0.0.2:3270",
		"--node-id n1 --bind 127.0.0.1 --join nowhere",     // no port
		"--node-id n1 --bind 127.0.0.1 --api-port 3271",    // same as raft
		"--node-id n1 --bind 127.0.0.1 --iscsi-port 70000", // out of range
		"--node-id n1 --bind 127.0.0.1 --gossip-key short", // not a key
		"--node-id n1 --bind 127.0.0.1 --token-file /nonexistent/x",
		"--node-id n1 --bind 127.0.0.1 --resync-rate fast",
		"--node-id n1 --bind 127.0.0.1 --resync-rate -5M",
	} {
		if _, err := parseClusterServeFlags(strings.Fields(bad), env(nil), &strings.Builder{}); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
