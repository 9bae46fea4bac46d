package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// End-to-end tests of what cluster nodes write: one log format per node,
// the wrong-token join, and "hatgt dev" under SIGHUP.

// freeLoopbackIPs returns n consecutive loopback addresses 127.0.X.77,
// .78, ... whose cluster ports are free, or skips the test.
func freeLoopbackIPs(t *testing.T, n int) []string {
	t.Helper()
	for try := range 50 {
		octet := 100 + (os.Getpid()+try*11+n)%150
		var ips []string
		for i := range n {
			ip := fmt.Sprintf("127.0.%d.%d", octet, 77+i)
			if !portsFree(ip, 3260, 3270, 3271, 3272, 3273) {
				break
			}
			ips = append(ips, ip)
		}
		if len(ips) == n {
			return ips
		}
	}
	t.Skip("no free loopback addresses for cluster nodes")
	return nil
}

// logfmtKeys parses one slog text line (key=value, values bare or quoted
// with Go escapes) and returns its keys in order and their values; ok is
// false when the line is not that.
func logfmtKeys(line string) (keys []string, vals map[string]string, ok bool) {
	vals = map[string]string{}
	for s := line; s != ""; {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], " \"") {
			return nil, nil, false
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				return nil, nil, false
			}
			var err error
			if err = json.Unmarshal([]byte(s[:end+1]), &val); err != nil {
				// Go's %q escapes are JSON's but for \x..; accept them.
				val = s[1:end]
			}
			s = s[end+1:]
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			val, s = s[:sp], s[sp:]
		}
		if s != "" {
			if s[0] != ' ' {
				return nil, nil, false
			}
			s = s[1:]
		}
		if _, dup := vals[key]; dup {
			return nil, nil, false
		}
		keys = append(keys, key)
		vals[key] = val
	}
	return keys, vals, len(keys) > 0
}

// checkLogLines checks that every line of a node's stderr is one record of
// format, with time, level and msg, and node=id exactly once; it returns
// the components seen.
func checkLogLines(t *testing.T, format, id, out string) map[string]int {
	t.Helper()
	components := map[string]int{}
	levels := map[string]bool{"TRACE": true, "DEBUG": true, "INFO": true, "WARN": true, "ERROR": true}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 10 {
		t.Fatalf("%s wrote only %d lines:\n%s", id, len(lines), out)
	}
	for i, line := range lines {
		var rec map[string]string
		switch format {
		case "json":
			var m map[string]any
			dec := json.NewDecoder(strings.NewReader(line))
			if err := dec.Decode(&m); err != nil || dec.More() {
				t.Errorf("%s line %d is not one JSON object (%v):\n%s", id, i+1, err, line)
				continue
			}
			if c := strings.Count(line, `"node":`); c != 1 {
				t.Errorf("%s line %d has %d node keys:\n%s", id, i+1, c, line)
			}
			rec = map[string]string{}
			for k, v := range m {
				rec[k] = fmt.Sprint(v)
			}
		default:
			keys, vals, ok := logfmtKeys(line)
			if !ok || len(keys) < 4 || keys[0] != "time" || keys[1] != "level" || keys[2] != "msg" {
				t.Errorf("%s line %d is not a key=value record starting time= level= msg=:\n%s", id, i+1, line)
				continue
			}
			rec = vals
		}
		if rec["node"] != id || !levels[rec["level"]] || rec["msg"] == "" {
			t.Errorf("%s line %d: node=%q level=%q msg=%q; want node=%s, a level and a message:\n%s", id, i+1, rec["node"], rec["level"], rec["msg"], id, line)
		}
		if _, err := time.Parse(time.RFC3339Nano, rec["time"]); err != nil {
			t.Errorf("%s line %d: time %q: %v", id, i+1, rec["time"], err)
		}
		components[rec["component"]]++
	}
	return components
}

// TestNodeLogIsOneFormat runs two cluster nodes (n1 bootstraps, n2 joins)
// at debug level for a moment in each log format, and checks that every
// line either writes, Raft's and memberlist's included, parses as that
// format with the node's ID.
func TestNodeLogIsOneFormat(t *testing.T) {
	bin := buildHatgt(t)
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			ips := freeLoopbackIPs(t, 2)
			common := []string{"--log-format", format, "--log-level", "debug"}
			n1 := startHatgt(t, bin, append([]string{"serve", "--node-id", "n1", "--bind", ips[0], "--data-dir", t.TempDir(), "--bootstrap"}, common...)...)
			n1.waitLog("became leader", 1)
			n2 := startHatgt(t, bin, append([]string{"serve", "--node-id", "n2", "--bind", ips[1], "--data-dir", t.TempDir(), "--join", ips[0] + ":3270"}, common...)...)
			n2.waitLog("joined the cluster", 1)
			// Gossip probes and Raft heartbeats go on for a moment.
			n2.waitLog("memberlist", 3)
			for _, p := range []*proc{n2, n1} {
				if code := p.stop(); code != 0 {
					t.Errorf("exit status after SIGTERM = %d", code)
				}
			}
			seen := map[string]bool{}
			for id, p := range map[string]*proc{"n1": n1, "n2": n2} {
				for c := range checkLogLines(t, format, id, p.stderr.String()) {
					seen[c] = true
				}
			}
			for _, c := range []string{"cluster.raft", "cluster.memberlist", "cluster"} {
				if !seen[c] {
					t.Errorf("no line from component %s: the library's logs did not come through the node's logger (components: %v)", c, seen)
				}
			}
		})
	}
}

// TestJoinWithWrongTokenStops: a node whose admin token is not the
// cluster's is refused; it says so and exits 1 instead of retrying a join
// that can never work.
func TestJoinWithWrongTokenStops(t *testing.T) {
	bin := buildHatgt(t)
	ips := freeLoopbackIPs(t, 2)
	n1 := exec.Command(bin, "serve", "--node-id", "n1", "--bind", ips[0], "--data-dir", t.TempDir(), "--bootstrap")
	n1.Env = append(os.Environ(), "HATGT_TOKEN=the-cluster-token-0123")
	p1 := startCmd(t, n1)
	p1.waitLog("became leader", 1)

	n2 := exec.Command(bin, "serve", "--node-id", "n2", "--bind", ips[1], "--data-dir", t.TempDir(), "--join", ips[0]+":3270")
	n2.Env = append(os.Environ(), "HATGT_TOKEN=another-token-456789")
	p2 := startCmd(t, n2)
	select {
	case <-p2.done:
	case <-time.After(90 * time.Second): // a bound against a hang
		t.Fatalf("the node with the wrong token still runs (retrying forever?):\n%s", p2.stderr.String())
	}
	if code := p2.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	out := p2.stderr.String()
	if !strings.Contains(out, "refused this node's admin token") || !strings.Contains(out, ips[0]+":3270") {
		t.Errorf("the log does not say the token was refused by %s:3270:\n%s", ips[0], out)
	}
	if strings.Contains(out, "another-token") || strings.Contains(out, "the-cluster-token") {
		t.Errorf("the log holds a token:\n%s", out)
	}
	if code := p1.stop(); code != 0 {
		t.Errorf("n1 exit status %d", code)
	}
}

// startCmd starts a prepared hatgt command like startHatgt.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, cmd: cmd, stderr: &lockedBuffer{}, portal: make(chan string, 1), done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.alive() {
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", strings.Join(cmd.Args, " "), p.stderr.String())
		}
	})
	return p
}

// TestDevClusterIgnoresSIGHUP: a hangup (terminal closed) does not take
// "hatgt dev" and its nodes down; it is reported, and Ctrl-C still stops
// everything.
func TestDevClusterIgnoresSIGHUP(t *testing.T) {
	bin := buildHatgt(t)
	ips := freeLoopbackIPs(t, 1)
	dir := t.TempDir()
	cmd := exec.Command(bin, "dev", "--nodes", "1", "--first-ip", ips[0], "--data-dir", dir)
	var out lockedBuffer
	cmd.Stdout = &out
	p := startCmd(t, cmd)
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "cluster is up") {
		if !p.alive() || time.Now().After(deadline) {
			t.Fatalf("hatgt dev did not come up (exited: %v):\n%s\n%s", !p.alive(), out.String(), p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.signal(syscall.SIGHUP)
	p.waitLog("SIGHUP ignored", 1)
	if !p.alive() {
		t.Fatal("hatgt dev died of SIGHUP")
	}
	p.signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("hatgt dev did not stop after SIGINT")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGINT", code)
	}
	// The node's log holds log records only (its banner is not in it).
	b, err := os.ReadFile(filepath.Join(dir, "n1.log"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("is running")) {
		t.Errorf("n1.log holds the node's banner:\n%s", b)
	}
	checkLogLines(t, "text", "n1", string(b))
}
