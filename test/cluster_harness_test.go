package test

import (
	"context"
	"encoding/json"
	"errors"
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
	net   *netnsNet // nil: nodes on loopback addresses
}

// clusterProc is one node process; it can be killed, paused and
// restarted with the same identity and data.
type clusterProc struct {
	c       *testCluster
	idx     int
	id, ip  string
	ns      string // its network namespace, if any
	dataDir string
	logPath string
	args    []string
	cmd     *exec.Cmd
	done    chan struct{}
	paused  bool
	cut     bool // isolated from the network
}

func (p *clusterProc) api() string { return net.JoinHostPort(p.ip, strconv.Itoa(clusterAPIPort)) }
func (p *clusterProc) portal() string {
	return net.JoinHostPort(p.ip, strconv.Itoa(clusterISCSIPort))
}

// newTestCluster starts n nodes (n1 bootstraps, the others join it) on
// loopback addresses and waits until every node sees n voters and a
// leader. It skips where the loopback addresses are not usable (not
// Linux).
func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("cluster tests need the whole 127.0.0.0/8 on the loopback interface (Linux)")
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
	return startTestCluster(t, n, nil, func(i int) string { return fmt.Sprintf("127.0.%d.%d", octet, 11+i) })
}

// newNetnsCluster starts n nodes, each in its own network namespace (see
// netnsNet), so that isolate can cut one off. It skips without root.
func newNetnsCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	nn := newNetnsNet(t, n)
	return startTestCluster(t, n, nn, nn.ip)
}

func startTestCluster(t *testing.T, n int, nn *netnsNet, ipOf func(int) string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, bin: hatgtBin, net: nn}
	if nn != nil {
		// Off loopback the admin API needs a token (and every node the
		// same one); the CLI commands get it from the environment too.
		c.env = []string{"HATGT_TOKEN=cluster-test-token-" + nn.tag}
	}
	if b := os.Getenv("HATGT_CLUSTER_BIN"); b != "" {
		c.bin = b // another build of hatgt to run the cluster tests against
	}
	root := t.TempDir()
	for i := range n {
		p := &clusterProc{c: c, idx: i, id: fmt.Sprintf("n%d", i+1), ip: ipOf(i)}
		if nn != nil {
			p.ns = nn.ns(i)
		}
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
			if !p.running() {
				t.Fatalf("%s exited during start-up: %v", p.id, p.cmd.ProcessState)
			}
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
	p.cmd = p.command(p.c.bin, p.args...)
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

// command runs name in the node's network namespace, if it has one.
func (p *clusterProc) command(name string, args ...string) *exec.Cmd {
	if p.ns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", p.ns, name}, args...)...)
}

// isolate cuts the node off the network (netns clusters only): it runs on
// but reaches, and is reached by, no one. heal reconnects it.
func (p *clusterProc) isolate() { p.link(false) }
func (p *clusterProc) heal()    { p.link(true) }

func (p *clusterProc) link(up bool) {
	p.c.t.Helper()
	if p.c.net == nil {
		p.c.t.Fatal("isolate and heal need a cluster from newNetnsCluster")
	}
	p.c.net.setLink(p.idx, up)
	p.cut = !up
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
	return p.runCLI(false, args)
}

// tryHatgtInside is tryHatgt run inside the node's network namespace: it
// reaches an isolated node's API.
func (p *clusterProc) tryHatgtInside(args ...string) (string, error) {
	return p.runCLI(true, args)
}

func (p *clusterProc) runCLI(inside bool, args []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := p.c.bin
	if inside && p.ns != "" {
		name, args = "ip", append([]string{"netns", "exec", p.ns, p.c.bin}, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), p.c.env...)
	cmd.Env = append(cmd.Env, "HATGT_ADDR="+p.api())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// statusCLI runs "hatgt status ARGS" through the node's API: exit status
// 3 (the cluster has problems, which the output shows) is an answer, not a
// failure.
func (p *clusterProc) statusCLI(args ...string) (string, error) {
	out, err := p.tryHatgt(append([]string{"status"}, args...)...)
	if statusHasProblems(err) {
		err = nil
	}
	return out, err
}

// statusHasProblems tells whether err is hatgt status's exit status 3.
func statusHasProblems(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == 3
}

// statusJSON is "hatgt status --json" through the CLI, decoded.
func (p *clusterProc) statusJSON() cluster.Status {
	p.c.t.Helper()
	out, err := p.statusCLI("--json")
	if err != nil {
		p.c.t.Fatalf("hatgt status --json via %s: %v\n%s", p.id, err, out)
	}
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

// leader returns the node every running node (not paused, not cut off)
// agrees leads, waiting for the agreement.
func (c *testCluster) leader() *clusterProc {
	c.t.Helper()
	var id string
	c.waitFor("the running nodes agree on a leader", 30*time.Second, func() (bool, string) {
		id = ""
		for _, p := range c.nodes {
			if !p.running() || p.paused || p.cut {
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

// netnsNet isolates each node of a test cluster in its own network
// namespace, so that a test can cut a node off the network (a partition)
// rather than only kill or pause it. The nodes' namespaces hang on a
// bridge in a hub namespace (its own, empty, packet filter: the host's
// bridge netfilter rules do not apply there); the test process reaches
// them through one more veth from the host namespace into the bridge.
// It needs root and iproute2's "ip netns".
type netnsNet struct {
	t      *testing.T
	tag    string // short, unique: part of every interface and namespace name
	subnet string // "10.231.N", the nodes are .11, .12, ...
}

func (n *netnsNet) hub() string           { return "hatgt-" + n.tag + "-hub" }
func (n *netnsNet) ns(i int) string       { return fmt.Sprintf("hatgt-%s-n%d", n.tag, i+1) }
func (n *netnsNet) hostVeth(i int) string { return fmt.Sprintf("hg%sn%dh", n.tag, i+1) }
func (n *netnsNet) ip(i int) string       { return fmt.Sprintf("%s.%d", n.subnet, 11+i) }

// newNetnsNet builds the namespaces of n nodes, or skips the test where it
// cannot (not root, no ip netns).
func newNetnsNet(t *testing.T, nodes int) *netnsNet {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("network-namespace tests need Linux and root (ip netns, veth, bridge); skipping")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network-namespace tests need iproute2's ip (apt-get install iproute2); skipping")
	}
	pid := os.Getpid()
	n := &netnsNet{t: t, tag: fmt.Sprintf("%x", pid), subnet: fmt.Sprintf("10.231.%d", 1+pid%250)}
	removeStaleNetns()
	t.Cleanup(n.destroy)
	if out, err := exec.Command("ip", "netns", "add", n.hub()).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace (%v: %s); skipping", err, strings.TrimSpace(string(out)))
	}
	n.run("ip", "netns", "exec", n.hub(), "ip", "link", "set", "lo", "up")
	n.run("ip", "netns", "exec", n.hub(), "ip", "link", "add", "br0", "type", "bridge")
	n.run("ip", "netns", "exec", n.hub(), "ip", "link", "set", "br0", "up")
	for i := range nodes {
		n.run("ip", "netns", "add", n.ns(i))
		n.run("ip", "link", "add", n.hostVeth(i), "type", "veth", "peer", "name", "eth0", "netns", n.ns(i))
		n.run("ip", "link", "set", n.hostVeth(i), "netns", n.hub())
		n.run("ip", "netns", "exec", n.hub(), "ip", "link", "set", n.hostVeth(i), "master", "br0", "up")
		n.run("ip", "netns", "exec", n.ns(i), "ip", "addr", "add", n.ip(i)+"/24", "dev", "eth0")
		n.run("ip", "netns", "exec", n.ns(i), "ip", "link", "set", "eth0", "up")
		n.run("ip", "netns", "exec", n.ns(i), "ip", "link", "set", "lo", "up")
	}
	root := "hg" + n.tag + "r"
	n.run("ip", "link", "add", root, "type", "veth", "peer", "name", root+"h", "netns", n.hub())
	n.run("ip", "netns", "exec", n.hub(), "ip", "link", "set", root+"h", "master", "br0", "up")
	n.run("ip", "addr", "add", n.subnet+".1/24", "dev", root)
	n.run("ip", "link", "set", root, "up")
	return n
}

func (n *netnsNet) run(args ...string) {
	n.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		n.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// removeStaleNetns removes the namespaces of earlier runs whose test
// process is gone (killed by a timeout before its clean-up ran): the tag in
// their names is the pid of the test process that made them.
func removeStaleNetns() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		parts := strings.Split(f[0], "-")
		if len(parts) != 3 || parts[0] != "hatgt" {
			continue
		}
		pid, err := strconv.ParseInt(parts[1], 16, 64)
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			exec.Command("ip", "link", "del", "hg"+parts[1]+"r").Run()
			exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// destroy removes the namespaces; their veths (and the host's, whose peer
// is in the hub) go with them.
func (n *netnsNet) destroy() {
	exec.Command("ip", "link", "del", "hg"+n.tag+"r").Run()
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "hatgt-"+n.tag+"-") {
			exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// setLink brings node i's link to the bridge down (cut off from every
// other node and from the test) or up again.
func (n *netnsNet) setLink(i int, up bool) {
	n.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	n.run("ip", "netns", "exec", n.hub(), "ip", "link", "set", n.hostVeth(i), state)
}
