package test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// The files deploy/ ships, relative to this package.
const (
	unitFile   = "../deploy/systemd/hatgt.service"
	envExample = "../deploy/systemd/hatgt.env"
	deployDir  = "../deploy"
)

// TestDeployUnitVerifies runs systemd-analyze verify on the shipped unit
// (a copy whose ExecStart runs the binary under test: verify checks that
// the program exists) and fails on anything it says about the unit:
// systemd only warns about an unknown key or a bad value, and ignores it.
func TestDeployUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: install systemd (apt-get install systemd; .ci/run does) to check deploy/systemd/hatgt.service")
	}
	unit, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	exec0 := execStartArgv0(t, parseUnit(t, unitFile))
	copyPath := filepath.Join(t.TempDir(), "hatgt.service")
	text := strings.Replace(string(unit), "ExecStart="+exec0+" ", "ExecStart="+hatgtBin+" ", 1)
	if text == string(unit) {
		t.Fatalf("could not point ExecStart at the test binary")
	}
	if err := os.WriteFile(copyPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", copyPath).CombinedOutput()
	var about []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "hatgt") {
			about = append(about, line)
		} else if line != "" {
			t.Logf("systemd-analyze (not about the unit): %s", line)
		}
	}
	if err != nil || len(about) > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unitFile, err, strings.Join(about, "\n"))
	}
}

// TestDeployScriptsParse checks the syntax of every shell script under
// deploy/ (bash -n) and of the Vagrantfile (ruby -c, when ruby is there).
func TestDeployScriptsParse(t *testing.T) {
	var scripts []string
	err := filepath.WalkDir(deployDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".sh") {
			scripts = append(scripts, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) < 3 {
		t.Fatalf("found only %v under %s: want provision-node.sh, create-demo.sh and provision-initiator.sh at least", scripts, deployDir)
	}
	for _, s := range scripts {
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
		if fi, err := os.Stat(s); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s is not executable (%v)", s, err)
		}
	}
}

// vagrantStub stands in for Vagrant: it loads the Vagrantfile named by
// $VAGRANTFILE with ARGV as the vagrant command line, records what the
// Vagrantfile configures and prints it as JSON.
const vagrantStub = `
require "json"
$machines = {}
class StubVM
  attr_accessor :box, :hostname
  attr_reader :networks, :provisions, :folders
  def initialize
    @networks, @provisions, @folders = [], [], []
  end
  def synced_folder(src, dst, **o)
    @folders << o.transform_keys(&:to_s).merge("src" => src, "dst" => dst)
  end
  def provider(name)
    yield Struct.new(:memory, :cpus).new
  end
  def network(type, **o)
    @networks << o.transform_keys(&:to_s).merge("type" => type)
  end
  def provision(name, **o)
    @provisions << o.transform_keys(&:to_s).merge("name" => name)
  end
  def define(name)
    c = StubConfig.new
    yield c
    $machines[name] = c.vm
  end
end
class StubConfig
  attr_reader :vm
  def initialize
    @vm = StubVM.new
  end
end
module Vagrant
  def self.configure(version)
    $top = StubConfig.new
    yield $top
  end
end
load ENV.fetch("VAGRANTFILE")
ms = $machines.transform_values { |vm| {"hostname" => vm.hostname, "networks" => vm.networks, "provisions" => vm.provisions} }
puts JSON.generate({"box" => $top.vm.box, "folders" => $top.vm.folders, "machines" => ms})
`

type vagrantConfig struct {
	Box     string `json:"box"`
	Folders []struct {
		Src      string `json:"src"`
		Dst      string `json:"dst"`
		Type     string `json:"type"`
		Disabled bool   `json:"disabled"`
	} `json:"folders"`
	Machines map[string]struct {
		Hostname string `json:"hostname"`
		Networks []struct {
			Type string `json:"type"`
			IP   string `json:"ip"`
		} `json:"networks"`
		Provisions []struct {
			Name string            `json:"name"`
			Type string            `json:"type"`
			Path string            `json:"path"`
			Args []string          `json:"args"`
			Env  map[string]string `json:"env"`
		} `json:"provisions"`
	} `json:"machines"`
}

// TestDeployVagrantfile runs the Vagrantfile under ruby with a stand-in
// for Vagrant (there is no Vagrant, nor a hypervisor, here) and checks
// what it configures: node1..node3 and the initiator on one private
// network, each node provisioned with its id, its address and node1's,
// the demo LUN made on the last node through its own API, the initiator
// logging in to every node, the scripts it names present; that "vagrant
// up" without the binary stops with the build command, and that it makes
// the shared secrets once, private, in forms hatgt accepts.
func TestDeployVagrantfile(t *testing.T) {
	if _, err := exec.LookPath("ruby"); err != nil {
		t.Fatal("ruby not found: install it (apt-get install ruby; .ci/run does) to check deploy/vagrant/Vagrantfile")
	}
	src := filepath.Join(deployDir, "vagrant")
	if out, err := exec.Command("ruby", "-c", filepath.Join(src, "Vagrantfile")).CombinedOutput(); err != nil {
		t.Fatalf("ruby -c Vagrantfile: %v\n%s", err, out)
	}
	// A copy, so that the secrets it makes land in a temporary directory.
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "Vagrantfile"), readFile(t, filepath.Join(src, "Vagrantfile")), 0o644)
	vagrant := func(args ...string) (string, error) {
		cmd := exec.Command("ruby", append([]string{"-e", vagrantStub, "--"}, args...)...)
		cmd.Env = append(os.Environ(), "VAGRANTFILE="+filepath.Join(dir, "Vagrantfile"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			return stderr.String(), err
		}
		return stdout.String(), nil
	}
	if out, err := vagrant("up"); err == nil || !strings.Contains(out, "GOOS=linux GOARCH=amd64 go build -o deploy/vagrant/hatgt ./cmd/hatgt") {
		t.Errorf("vagrant up without deploy/vagrant/hatgt: %v, want it to stop naming the build command:\n%s", err, out)
	}
	if _, err := vagrant("status"); err != nil {
		t.Errorf("vagrant status without the binary: %v (only up, provision and reload need it)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".secrets")); err == nil {
		t.Errorf("the Vagrantfile made .secrets/ without a binary to provision")
	}

	mustWrite(t, filepath.Join(dir, "hatgt"), "not run here", 0o755)
	out, err := vagrant("--provider=libvirt", "up")
	if err != nil {
		t.Fatalf("vagrant up: %v\n%s", err, out)
	}
	secret := func(name string) string {
		p := filepath.Join(dir, ".secrets", name)
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf(".secrets/%s: %v, want mode 0600", name, err)
		}
		return strings.TrimSpace(readFile(t, p))
	}
	token, key := secret("token"), secret("gossip-key")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(token) {
		t.Errorf("token %q: want 32 hex digits", token)
	}
	if _, err := cluster.ParseGossipKey(key); err != nil {
		t.Errorf("gossip key %q: hatgt refuses it: %v", key, err)
	}
	if _, err := vagrant("provision"); err != nil || secret("token") != token || secret("gossip-key") != key {
		t.Errorf("a second vagrant provision (%v) changed the secrets: every node must keep the same", err)
	}

	var vc vagrantConfig
	if err := json.Unmarshal([]byte(out), &vc); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if vc.Box != "debian/bookworm64" {
		t.Errorf("box %q, want debian/bookworm64", vc.Box)
	}
	// provision-node.sh reads /deploy by default: the synced deploy/ must be there.
	synced := false
	for _, f := range vc.Folders {
		synced = synced || (f.Src == ".." && f.Dst == "/deploy" && !f.Disabled)
	}
	if !synced || !strings.Contains(readFile(t, filepath.Join(src, "provision-node.sh")), "${HATGT_DEPLOY_SRC:-/deploy}") {
		t.Errorf("deploy/ must be synced to /deploy, where provision-node.sh looks: %+v", vc.Folders)
	}
	ip := func(name string) string {
		m := vc.Machines[name]
		if len(m.Networks) != 1 || m.Networks[0].Type != "private_network" || net.ParseIP(m.Networks[0].IP) == nil {
			t.Fatalf("%s: networks %+v, want one private_network with an IP", name, m.Networks)
		}
		return m.Networks[0].IP
	}
	if names := slices.Sorted(maps.Keys(vc.Machines)); !slices.Equal(names, []string{"initiator", "node1", "node2", "node3"}) {
		t.Fatalf("machines %v, want node1, node2, node3 and initiator", names)
	}
	nodeIPs := []string{ip("node1"), ip("node2"), ip("node3")}
	var demoArgs []string
	for i, name := range []string{"node1", "node2", "node3"} {
		m := vc.Machines[name]
		if len(m.Provisions) == 0 || m.Provisions[0].Path != "provision-node.sh" ||
			!slices.Equal(m.Provisions[0].Args, []string{fmt.Sprintf("n%d", i+1), nodeIPs[i], nodeIPs[0]}) {
			t.Errorf("%s: first provisioner %+v, want provision-node.sh n%d %s %s", name, m.Provisions, i+1, nodeIPs[i], nodeIPs[0])
		}
		for _, p := range m.Provisions[1:] {
			if p.Path != "create-demo.sh" || name != "node3" {
				t.Errorf("%s: unexpected provisioner %+v", name, p)
				continue
			}
			demoArgs = p.Args
			if p.Env["HATGT_ADDR"] != nodeIPs[2]+":3270" {
				t.Errorf("create-demo.sh on node3 talks to %q, want its own API %s:3270", p.Env["HATGT_ADDR"], nodeIPs[2])
			}
		}
	}
	ini := vc.Machines["initiator"]
	if len(demoArgs) != 3 || demoArgs[0] != "3" || len(ini.Provisions) != 1 || ini.Provisions[0].Path != "provision-initiator.sh" {
		t.Fatalf("want create-demo.sh 3 TARGET INITIATOR on node3 (got %q) and provision-initiator.sh on the initiator (got %+v)", demoArgs, ini.Provisions)
	}
	// The initiator names itself as the ACL says, logs in to that
	// target, through every node.
	if want := append([]string{demoArgs[2], demoArgs[1]}, nodeIPs...); !slices.Equal(ini.Provisions[0].Args, want) {
		t.Errorf("provision-initiator.sh args %q, want %q", ini.Provisions[0].Args, want)
	}
	all := append([]string{ip("initiator")}, nodeIPs...)
	for _, a := range all {
		if n := strings.Count(strings.Join(all, " "), a); n != 1 || !strings.HasPrefix(a, strings.Join(strings.Split(nodeIPs[0], ".")[:3], ".")+".") {
			t.Errorf("addresses %v: want distinct addresses on one /24", all)
			break
		}
	}
	for _, m := range vc.Machines {
		for _, p := range m.Provisions {
			if _, err := os.Stat(filepath.Join(src, p.Path)); err != nil {
				t.Errorf("the Vagrantfile runs %s: %v", p.Path, err)
			}
		}
	}
}

// TestDeployUnitRunsCluster checks that the unit and the provisioning
// script, as shipped, make a working cluster: provision-node.sh installs
// three nodes into their own directories (HATGT_DEPLOY_ROOT: no
// systemctl); the test reads the installed unit's ExecStart and each
// node's /etc/default/hatgt as systemd would (EnvironmentFile=, ${VAR}
// and $VAR expansion), runs the three command lines on loopback addresses
// (every absolute path read under the node's directory) with the env
// file as their only environment, waits until all three are alive
// members, runs create-demo.sh against them, and stops the LUN's owner
// with SIGTERM: it must exit 0 (Restart=on-failure leaves it stopped)
// within the unit's TimeoutStopSec.
func TestDeployUnitRunsCluster(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Fatal("the deploy test runs the Linux unit on loopback addresses 127.0.X.Y: Linux only")
	}
	unit := parseUnit(t, unitFile)
	example := parseEnvFile(t, envExample)

	// Addresses of our own: 127.0.250-254.11-13 (the cluster harness uses
	// third octets 100-249, hatgt dev 127.0.0.11-13).
	octet := -1
	for o := 250; o <= 254; o++ {
		if loopbackFree(o, 3) {
			octet = o
			break
		}
	}
	if octet < 0 {
		t.Fatal("no free loopback range in 127.0.250-254.11-13 for the deploy test")
	}
	ips := []string{fmt.Sprintf("127.0.%d.11", octet), fmt.Sprintf("127.0.%d.12", octet), fmt.Sprintf("127.0.%d.13", octet)}

	base := t.TempDir()
	secrets := filepath.Join(base, "secrets")
	token := fmt.Sprintf("deploy-test-token-%d", os.Getpid())
	gossipKey := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	mustWrite(t, filepath.Join(secrets, "token"), token+"\n", 0o600)
	mustWrite(t, filepath.Join(secrets, "gossip-key"), gossipKey+"\n", 0o600)
	deploy, err := filepath.Abs(deployDir)
	if err != nil {
		t.Fatal(err)
	}
	provision := func(root string, args ...string) (string, error) {
		cmd := exec.Command("bash", append([]string{filepath.Join(deploy, "vagrant", "provision-node.sh")}, args...)...)
		cmd.Env = append(os.Environ(), "HATGT_DEPLOY_SRC="+deploy, "HATGT_DEPLOY_BINARY="+hatgtBin,
			"HATGT_DEPLOY_SECRETS="+secrets, "HATGT_DEPLOY_ROOT="+root)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// Without a binary the provisioning stops and says how to build one.
	noBin := exec.Command("bash", filepath.Join(deploy, "vagrant", "provision-node.sh"), "n1", ips[0], ips[0])
	noBin.Env = append(os.Environ(), "HATGT_DEPLOY_SRC="+deploy, "HATGT_DEPLOY_BINARY="+filepath.Join(base, "no-such-hatgt"),
		"HATGT_DEPLOY_SECRETS="+secrets, "HATGT_DEPLOY_ROOT="+filepath.Join(base, "no-bin-root"))
	if out, err := noBin.CombinedOutput(); err == nil || !strings.Contains(string(out), "go build -o deploy/vagrant/hatgt ./cmd/hatgt") {
		t.Errorf("provision-node.sh without a binary: %v, want a failure naming the build command:\n%s", err, out)
	}

	roots := make([]string, 3)
	envs := make([]map[string]string, 3)
	for i := range 3 {
		roots[i] = filepath.Join(base, fmt.Sprintf("node%d", i+1))
		if out, err := provision(roots[i], fmt.Sprintf("n%d", i+1), ips[i], ips[0]); err != nil {
			t.Fatalf("provision-node.sh n%d: %v\n%s", i+1, err, out)
		}
		envs[i] = parseEnvFile(t, filepath.Join(roots[i], "etc/default/hatgt"))
		checkInstalled(t, roots[i], token)
	}
	// Provisioning again changes nothing.
	if out, err := provision(roots[1], "n2", ips[1], ips[0]); err != nil || strings.Contains(out, "wrote") {
		t.Errorf("provision-node.sh n2 a second time: %v, want nothing rewritten:\n%s", err, out)
	}

	// What the provisioning writes is the example with this node's
	// values: node1 bootstraps, as the example's active line; the others
	// join node1 as in its commented-out join line.
	joinLine := regexp.MustCompile(`(?m)^#\s*HATGT_CLUSTER_ARGS="--join ([0-9.]+):(\d+)"$`).FindStringSubmatch(readFile(t, envExample))
	if joinLine == nil {
		t.Fatalf("%s has no commented-out example HATGT_CLUSTER_ARGS=\"--join IP:PORT\" line", envExample)
	}
	if joinLine[2] != strconv.Itoa(clusterAPIPort) {
		t.Errorf("%s: the join example uses port %s, the admin API is on %d", envExample, joinLine[2], clusterAPIPort)
	}
	for i, env := range envs {
		want := maps.Clone(example)
		want["HATGT_NODE_ID"] = fmt.Sprintf("n%d", i+1)
		want["HATGT_BIND"] = ips[i]
		want["HATGT_GOSSIP_KEY"] = gossipKey
		if i > 0 {
			want["HATGT_CLUSTER_ARGS"] = fmt.Sprintf("--join %s:%s", ips[0], joinLine[2])
		}
		if !maps.Equal(env, want) {
			t.Errorf("node%d: provision-node.sh wrote /etc/default/hatgt\n  %v\nwant (the example %s with this node's values)\n  %v", i+1, env, envExample, want)
		}
	}
	if example["HATGT_NODE_ID"] != "n1" || example["HATGT_CLUSTER_ARGS"] != "--bootstrap" {
		t.Errorf("%s: want the example of a first node (n1, --bootstrap), got %q, %q", envExample, example["HATGT_NODE_ID"], example["HATGT_CLUSTER_ARGS"])
	}
	// Every variable the unit's command line uses is documented in the
	// example, which sets nothing else but what hatgt reads itself.
	refs := execStartVars(t, unit)
	for _, v := range refs {
		if _, ok := example[v]; !ok {
			t.Errorf("ExecStart uses $%s, which %s does not set", v, envExample)
		}
	}
	for v := range example {
		if !slices.Contains(refs, v) && v != "HATGT_GOSSIP_KEY" && v != "HATGT_TOKEN" {
			t.Errorf("%s sets %s, which neither ExecStart nor hatgt uses", envExample, v)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The stop must fit in TimeoutStopSec, with the shutdown timeout's
	// wait and a flush after it.
	stopLimit := unitDuration(t, unit, "TimeoutStopSec")
	if shutdown := 30 * time.Second; stopLimit < shutdown+15*time.Second {
		t.Errorf("TimeoutStopSec=%v leaves less than 15 s after --shutdown-timeout's %v for the final flush", stopLimit, shutdown)
	}
	if got := unitValue(t, unit, "Service", "Restart"); got != "on-failure" {
		t.Errorf("Restart=%s, want on-failure", got)
	}

	// A usage error in the env file is exit 2, which the unit does not
	// restart (RestartPreventExitStatus=2).
	bad := maps.Clone(envs[0])
	bad["HATGT_BIND"] = ""
	if code := runUnitOnce(t, unit, roots[0], bad); code != 2 || !slices.Contains(strings.Fields(unitValue(t, unit, "Service", "RestartPreventExitStatus")), "2") {
		t.Errorf("env file without HATGT_BIND: exit %d (want 2), and the unit must not restart on 2 (RestartPreventExitStatus=%s)", code, unitValue(t, unit, "Service", "RestartPreventExitStatus"))
	}

	nodes := make([]*unitProc, 3)
	for i := range 3 {
		nodes[i] = startUnit(t, unit, roots[i], envs[i], ips[i])
	}
	waitUntil(t, "3 alive nodes and a leader in hatgt status --json", 60*time.Second, func() (bool, string) {
		for _, p := range nodes {
			if !p.running() {
				t.Fatalf("%s exited during start-up: %v\n%s", p.id, p.cmd.ProcessState, tail(readFile(t, p.log), 3000))
			}
		}
		st, err := statusJSONOf(nodes[2].api)
		if err != nil {
			return false, err.Error()
		}
		alive := 0
		for _, n := range st.Nodes {
			if n.Alive && n.Voter {
				alive++
			}
		}
		return alive == 3 && st.Leader != "", fmt.Sprintf("%d alive voters, leader %q", alive, st.Leader)
	})

	// The admin token came from the unit's --token-file: a change
	// without it is refused.
	if out, err := exec.Command(hatgtBin, "target", "create", "iqn.2026-11.io.hatgt:no-token", "--addr", nodes[0].api).CombinedOutput(); err == nil {
		t.Errorf("target create without the token succeeded: the nodes run without the token file's token\n%s", out)
	}

	const target, initiator = "iqn.2026-11.io.hatgt:vagrant", "iqn.2026-11.io.hatgt:vagrant-initiator"
	demo := func() string {
		cmd := exec.Command("bash", filepath.Join(deploy, "vagrant", "create-demo.sh"), "3", target, initiator)
		cmd.Env = append(os.Environ(), "HATGT_ADDR="+nodes[2].api, "HATGT_BIN="+filepath.Join(roots[2], "usr/local/bin/hatgt"),
			"HATGT_TOKEN_FILE="+filepath.Join(roots[2], "etc/hatgt/token"), "HATGT_DEMO_WAIT=30")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("create-demo.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	t.Logf("create-demo.sh:\n%s", demo())
	if out := demo(); strings.Contains(out, "created") || strings.Contains(out, "added") {
		t.Errorf("create-demo.sh a second time created something again:\n%s", out)
	}
	st, err := statusJSONOf(nodes[0].api)
	if err != nil {
		t.Fatal(err)
	}
	var owner string
	if len(st.Targets) != 1 || st.Targets[0].IQN != target || !slices.Equal(st.Targets[0].ACL, []string{initiator}) || len(st.Targets[0].LUNs) != 1 {
		t.Fatalf("after create-demo.sh: targets %+v, want %s with LUN 0 and ACL [%s]", st.Targets, target, initiator)
	}
	lun := st.Targets[0].LUNs[0]
	if lun.Service != "serving" || len(lun.Copies) != 3 {
		t.Fatalf("LUN 0: service %q, %d copies; want serving, 3 copies: %+v", lun.Service, len(lun.Copies), lun)
	}
	for _, c := range lun.Copies {
		if c.Owner {
			owner = c.Node
		}
	}

	// SIGTERM, as systemctl stop sends it, to the LUN's owner.
	var p *unitProc
	for _, n := range nodes {
		if n.id == owner {
			p = n
		}
	}
	if p == nil {
		t.Fatalf("LUN 0's owner %q is none of the nodes", owner)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(stopLimit):
		t.Fatalf("%s (the owner) did not exit within TimeoutStopSec=%v of SIGTERM: systemd would SIGKILL it\n%s", p.id, stopLimit, tail(readFile(t, p.log), 3000))
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited %d after SIGTERM, want 0 (Restart=on-failure would restart a stopped node)\n%s", p.id, code, tail(readFile(t, p.log), 3000))
	}
	t.Logf("%s (owner of LUN 0) stopped with exit 0 %v after SIGTERM (TimeoutStopSec=%v)", p.id, time.Since(start).Round(time.Millisecond), stopLimit)
}

// checkInstalled checks what provision-node.sh put under root: the
// shipped unit, the binary under test, the token, private files private.
func checkInstalled(t *testing.T, root, token string) {
	t.Helper()
	if got, want := readFile(t, filepath.Join(root, "etc/systemd/system/hatgt.service")), readFile(t, unitFile); got != want {
		t.Errorf("%s: the installed unit is not %s", root, unitFile)
	}
	if got, want := readFile(t, filepath.Join(root, "usr/local/bin/hatgt")), readFile(t, hatgtBin); got != want {
		t.Errorf("%s: the installed binary is not the one given", root)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(root, "etc/hatgt/token"))); got != token {
		t.Errorf("%s: token file holds %q, want %q", root, got, token)
	}
	for _, f := range []string{"etc/hatgt/token", "etc/default/hatgt"} {
		fi, err := os.Stat(filepath.Join(root, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s/%s: %v, mode %v; want 0600 (it holds a secret)", root, f, err, fi.Mode().Perm())
		}
	}
}

// systemdUnit is a parsed unit file: section -> key -> values, in order.
type systemdUnit map[string]map[string][]string

// parseUnit reads a unit file as systemd does (comments, sections,
// key=value, lines continued with a backslash).
func parseUnit(t *testing.T, path string) systemdUnit {
	t.Helper()
	u := systemdUnit{}
	section := ""
	var cont string
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if cont != "" {
			line, cont = cont+" "+line, ""
		}
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not a key=value in a section: %q", path, n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	return u
}

// unitValue is the one value of key in section.
func unitValue(t *testing.T, u systemdUnit, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		t.Fatalf("unit: want one %s= in [%s], found %q", key, section, vs)
	}
	return vs[0]
}

// unitDuration reads a time span of [Service] in the forms the unit uses
// ("90s", "2min", a bare number of seconds).
func unitDuration(t *testing.T, u systemdUnit, key string) time.Duration {
	t.Helper()
	v := unitValue(t, u, "Service", key)
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(strings.Replace(v, "min", "m", 1))
	if err != nil {
		t.Fatalf("%s=%s: not a time span this test reads (write e.g. 90s)", key, v)
	}
	return d
}

// execStartWords is ExecStart split into words; a construct the test does
// not model (quotes, escapes, %-specifiers, prefixes like "-" or "+")
// fails the test rather than being read differently from systemd.
func execStartWords(t *testing.T, u systemdUnit) []string {
	t.Helper()
	v := unitValue(t, u, "Service", "ExecStart")
	if strings.ContainsAny(v, "\"'\\%") || strings.ContainsAny(v[:1], "@-:+!") {
		t.Fatalf("ExecStart=%s: quotes, escapes, specifiers and prefixes are not modelled by this test", v)
	}
	return strings.Fields(v)
}

func execStartArgv0(t *testing.T, u systemdUnit) string { return execStartWords(t, u)[0] }

var (
	wholeVar = regexp.MustCompile(`^\$([A-Za-z_][A-Za-z0-9_]*)$`)
	braceVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
)

// execStartVars lists the variables ExecStart refers to.
func execStartVars(t *testing.T, u systemdUnit) []string {
	t.Helper()
	var vs []string
	for _, w := range execStartWords(t, u) {
		if m := wholeVar.FindStringSubmatch(w); m != nil {
			vs = append(vs, m[1])
		}
		for _, m := range braceVar.FindAllStringSubmatch(w, -1) {
			vs = append(vs, m[1])
		}
	}
	return vs
}

// expandExecStart expands ExecStart as systemd.service(5) says: a word
// that is $NAME becomes the value split at whitespace (zero or more
// arguments); ${NAME} is replaced by the value in its word (a word that is
// only ${NAME} stays one argument, empty if unset).
func expandExecStart(t *testing.T, u systemdUnit, env map[string]string) []string {
	t.Helper()
	var argv []string
	for _, w := range execStartWords(t, u) {
		if m := wholeVar.FindStringSubmatch(w); m != nil {
			argv = append(argv, strings.Fields(env[m[1]])...)
			continue
		}
		w = braceVar.ReplaceAllStringFunc(w, func(s string) string { return env[s[2:len(s)-1]] })
		if strings.Contains(w, "$") {
			t.Fatalf("ExecStart word %q: a $ this test does not model", w)
		}
		argv = append(argv, w)
	}
	return argv
}

// parseEnvFile reads an EnvironmentFile= as systemd does for the forms
// it models: NAME=VALUE lines, # and ; comments, a value in double or
// single quotes. Anything else fails the test.
func parseEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(k) {
			t.Fatalf("%s:%d: not NAME=VALUE: %q", path, n, line)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if strings.ContainsAny(v, "\"'\\") {
			t.Fatalf("%s:%d: quotes or escapes inside the value of %s are not modelled by this test", path, n, k)
		}
		env[k] = v
	}
	return env
}

// unitProc is one node started from the unit's command line.
type unitProc struct {
	id, api, log string
	cmd          *exec.Cmd
	done         chan struct{}
}

func (p *unitProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// unitCommand is the node's process as systemd would start it: ExecStart
// expanded with env, which is also its whole environment (and PATH), every
// absolute path under root, the state directory made as StateDirectory=
// makes it.
func unitCommand(t *testing.T, u systemdUnit, root string, env map[string]string) *exec.Cmd {
	t.Helper()
	state := "/var/lib/" + unitValue(t, u, "Service", "StateDirectory")
	if err := os.MkdirAll(filepath.Join(root, state), 0o750); err != nil {
		t.Fatal(err)
	}
	argv := expandExecStart(t, u, env)
	if !slices.Contains(argv, state) {
		t.Fatalf("ExecStart %q does not use the state directory %s", argv, state)
	}
	for i, a := range argv {
		if strings.HasPrefix(a, "/") {
			argv[i] = filepath.Join(root, a)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.Dir = "/"
	return cmd
}

// runUnitOnce runs the node's command line to its end and returns its
// exit status (for a command line that must fail at once).
func runUnitOnce(t *testing.T, u systemdUnit, root string, env map[string]string) int {
	t.Helper()
	cmd := unitCommand(t, u, root, env)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s: still running after 30 s, want it to fail at once\n%s", strings.Join(cmd.Args, " "), out.String())
	}
	t.Logf("%s: exit %d: %s", strings.Join(cmd.Args, " "), cmd.ProcessState.ExitCode(), strings.TrimSpace(out.String()))
	return cmd.ProcessState.ExitCode()
}

func startUnit(t *testing.T, u systemdUnit, root string, env map[string]string, ip string) *unitProc {
	t.Helper()
	p := &unitProc{id: env["HATGT_NODE_ID"], api: net.JoinHostPort(ip, strconv.Itoa(clusterAPIPort)), log: filepath.Join(root, "hatgt.log")}
	p.cmd = unitCommand(t, u, root, env)
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() {
		p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.running() {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("---- %s: %s\n%s", p.id, strings.Join(p.cmd.Args, " "), tail(readFile(t, p.log), 4000))
		}
	})
	return p
}

// statusJSONOf is "hatgt status --json" through api; exit 3 (it shows a
// problem) is an answer.
func statusJSONOf(api string) (cluster.Status, error) {
	var st cluster.Status
	out, err := exec.Command(hatgtBin, "status", "--json", "--addr", api, "--timeout", "5s").Output()
	if err != nil && !statusHasProblems(err) {
		return st, fmt.Errorf("hatgt status --json --addr %s: %v", api, err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("hatgt status --json: %v: %s", err, out)
	}
	return st, nil
}

// waitUntil polls cond until it holds; the limit only keeps a broken
// cluster from hanging the run.
func waitUntil(t *testing.T, what string, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %v: %s", what, limit, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustWrite(t *testing.T, path, text string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
}
