package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// Ports every cluster node uses on its own loopback address (the defaults
// of "hatgt serve --bind").
const (
	clusterISCSIPort = 3260
	clusterAPIPort   = 3270
)

// testCluster is a cluster of real "hatgt serve" processes, each on its
// own loopback address (127.0.X.11, .12, ...: Linux routes all of
// 127.0.0.0/8 to lo) with the default ports and a temporary data dir.
type testCluster struct {
	t     *testing.T
	bin   string
	env   []string
	nodes []*clusterProc
}

// clusterProc is one node process; it can be killed, paused and
// restarted with the same identity and data.
type clusterProc struct {
	c       *testCluster
	id, ip  string
	dataDir string
	logPath string
	args    []string
	cmd     *exec.Cmd
	done    chan struct{}
	paused  bool
}

func (p *clusterProc) api() string { return net.JoinHostPort(p.ip, strconv.Itoa(clusterAPIPort)) }
func (p *clusterProc) portal() string {
	return net.JoinHostPort(p.ip, strconv.Itoa(clusterISCSIPort))
}

// newTestCluster starts n nodes (n1 bootstraps, the others join it) and
// waits until every node sees n voters and a leader. It skips where the
// loopback addresses are not usable (not Linux).
func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("cluster tests need the whole 127.0.0.0/8 on the loopback interface (Linux)")
	}
	c := &testCluster{t: t, bin: hatgtBin}
	if b := os.Getenv("HATGT_CLUSTER_BIN"); b != "" {
		c.bin = b // another build of hatgt to run the cluster tests against
	}
	// TODO(k2): drop once main dispatches cluster-mode serve.
	if out, _ := exec.Command(c.bin, "serve", "--bind", "127.0.0.1", "--help").CombinedOutput(); !strings.Contains(string(out), "-bootstrap") {
		t.Skip("this hatgt build has no cluster-mode serve yet")
	}
	// A third octet of our own, so that concurrent runs (or a "hatgt dev"
	// on 127.0.0.11-13) do not collide on the default ports.
	octet := -1
	for try := range 50 {
		o := 100 + (os.Getpid()+try*7)%150
		if loopbackFree(o, n) {
			octet = o
			break
		}
	}
	if octet < 0 {
		t.Skip("no free loopback address range for a test cluster")
	}
	root := t.TempDir()
	for i := range n {
		p := &clusterProc{c: c, id: fmt.Sprintf("n%d", i+1), ip: fmt.Sprintf("127.0.%d.%d", octet, 11+i)}
		p.dataDir = filepath.Join(root, p.id)
		p.logPath = filepath.Join(root, p.id+".log")
		p.args = []string{"serve", "--node-id", p.id, "--bind", p.ip, "--data-dir", p.dataDir, "--log-level", "debug"}
		if i == 0 {
			p.args = append(p.args, "--bootstrap")
		} else {
			p.args = append(p.args, "--join", c.nodes[0].api())
		}
		c.nodes = append(c.nodes, p)
	}
	t.Cleanup(func() {
		for _, p := range c.nodes {
			p.kill()
		}
		if t.Failed() {
			for _, p := range c.nodes {
				b, _ := os.ReadFile(p.logPath)
				t.Logf("---- %s log (last 6000 bytes):\n%s", p.id, tail(string(b), 6000))
			}
		}
	})
	for _, p := range c.nodes {
		p.start()
	}
	c.waitFor("every node sees all voters and a leader", 60*time.Second, func() (bool, string) {
		for _, p := range c.nodes {
			st, err := p.status()
			if err != nil {
				return false, fmt.Sprintf("%s: %v", p.id, err)
			}
			if v := voters(st); v != n || st.Leader == "" {
				return false, fmt.Sprintf("%s: %d voters, leader %q", p.id, v, st.Leader)
			}
		}
		return true, ""
	})
	return c
}

// loopbackFree tells whether the API and iSCSI ports of n nodes in
// 127.0.octet.11.. are free.
func loopbackFree(octet, n int) bool {
	for i := range n {
		for _, port := range []int{clusterISCSIPort, clusterAPIPort, 3271, 3272, 3273} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.%d.%d:%d", octet, 11+i, port))
			if err != nil {
				return false
			}
			l.Close()
		}
	}
	return true
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// start starts the node's process (again, after a kill: same id, data
// dir and flags; a restarted node finds its cluster by itself).
func (p *clusterProc) start() {
	p.c.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		p.c.t.Fatal(err)
	}
	fmt.Fprintf(logf, "==== start %s %s\n", p.c.bin, strings.Join(p.args, " "))
	p.cmd = exec.Command(p.c.bin, p.args...)
	p.cmd.Env = append(os.Environ(), p.c.env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		p.c.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(done)
	}(p.cmd, p.done)
}

func (p *clusterProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 kills the node with SIGKILL, as a crash, and waits for it.
func (p *clusterProc) kill9() {
	p.c.t.Helper()
	if !p.running() {
		p.c.t.Fatalf("%s is not running", p.id)
	}
	p.kill()
}

func (p *clusterProc) kill() {
	if p.running() {
		p.cmd.Process.Signal(syscall.SIGCONT) // a paused process dies all the same
		p.cmd.Process.Kill()
		<-p.done
	}
	p.paused = false
}

// pause stops the process with SIGSTOP (it neither answers nor times
// out, as a node stuck in the kernel or in a long GC pause); resume
// continues it.
func (p *clusterProc) pause() {
	p.signal(syscall.SIGSTOP)
	p.paused = true
}

func (p *clusterProc) resume() {
	p.signal(syscall.SIGCONT)
	p.paused = false
}

func (p *clusterProc) signal(sig syscall.Signal) {
	p.c.t.Helper()
	if !p.running() {
		p.c.t.Fatalf("%s is not running", p.id)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.c.t.Fatalf("%s: %v: %v", p.id, sig, err)
	}
}

// status asks the node's admin API for its status (with a short deadline:
// a paused node must not hang the test).
func (p *clusterProc) status() (cluster.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return cluster.NewClient(p.api(), "", nil).Status(ctx)
}

// hatgt runs a hatgt CLI command against the node's API and returns its
// output; a failure fails the test.
func (p *clusterProc) hatgt(args ...string) string {
	p.c.t.Helper()
	out, err := p.tryHatgt(args...)
	if err != nil {
		p.c.t.Fatalf("hatgt %s (via %s): %v\n%s", strings.Join(args, " "), p.id, err, out)
	}
	return out
}

func (p *clusterProc) tryHatgt(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.c.bin, args...)
	cmd.Env = append(os.Environ(), p.c.env...)
	cmd.Env = append(cmd.Env, "HATGT_ADDR="+p.api())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// statusJSON is "hatgt status --json" through the CLI, decoded.
func (p *clusterProc) statusJSON() cluster.Status {
	p.c.t.Helper()
	out := p.hatgt("status", "--json")
	var st cluster.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		p.c.t.Fatalf("hatgt status --json via %s: %v\n%s", p.id, err, out)
	}
	return st
}

// node returns the node with the given id.
func (c *testCluster) node(id string) *clusterProc {
	c.t.Helper()
	for _, p := range c.nodes {
		if p.id == id {
			return p
		}
	}
	c.t.Fatalf("no node %q", id)
	return nil
}

// leader returns the node every running node (not paused) agrees leads,
// waiting for the agreement.
func (c *testCluster) leader() *clusterProc {
	c.t.Helper()
	var id string
	c.waitFor("the running nodes agree on a leader", 30*time.Second, func() (bool, string) {
		id = ""
		for _, p := range c.nodes {
			if !p.running() || p.paused {
				continue
			}
			st, err := p.status()
			if err != nil {
				return false, fmt.Sprintf("%s: %v", p.id, err)
			}
			if st.Leader == "" || (id != "" && st.Leader != id) {
				return false, fmt.Sprintf("%s sees leader %q, others %q", p.id, st.Leader, id)
			}
			id = st.Leader
		}
		return id != "", "no node running"
	})
	return c.node(id)
}

// followers returns the running nodes other than the leader (paused ones
// included).
func (c *testCluster) followers() []*clusterProc {
	lead := c.leader()
	var out []*clusterProc
	for _, p := range c.nodes {
		if p != lead && p.running() {
			out = append(out, p)
		}
	}
	return out
}

// waitFor polls cond until it holds, failing the test with cond's last
// explanation after limit. The limit only stops a broken cluster from
// hanging the run; it is not an assertion on speed.
func (c *testCluster) waitFor(what string, limit time.Duration, cond func() (bool, string)) {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting for %s: gave up after %v: %s", what, limit, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func voters(st cluster.Status) int {
	n := 0
	for _, ns := range st.Nodes {
		if ns.Voter {
			n++
		}
	}
	return n
}
