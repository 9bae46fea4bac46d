package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// End-to-end tests of "hatgt serve" as a real process: the IET sample
// config served to libiscsi's tools, and SIGHUP in each mode.

// buildHatgt builds this package's binary into a test directory.
func buildHatgt(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs hatgt; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "hatgt")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func needLibiscsi(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"iscsi-ls", "iscsi-inq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install libiscsi-bin)", tool)
		}
	}
}

// proc is a running hatgt.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *lockedBuffer
	portal chan string
	done   chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startHatgt(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(bin, args...), stderr: &lockedBuffer{}, portal: make(chan string, 1), done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "portal" {
				select {
				case p.portal <- f[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.alive() {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("hatgt %s stderr:\n%s", strings.Join(args, " "), p.stderr.String())
		}
	})
	return p
}

// addr waits for the portal the server prints.
func (p *proc) addr() string {
	p.t.Helper()
	select {
	case a := <-p.portal:
		return a
	case <-p.done:
		p.t.Fatalf("hatgt exited before serving: %v", p.cmd.ProcessState)
	case <-time.After(60 * time.Second): // a bound against a hang, not a measurement
		p.t.Fatal("hatgt printed no portal within a minute")
	}
	return ""
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// waitLog waits until stderr holds sub n times (a bound against a hang).
func (p *proc) waitLog(sub string, n int) {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(p.stderr.String(), sub) < n {
		if !p.alive() {
			p.t.Fatalf("hatgt exited (%v) before logging %q", p.cmd.ProcessState, sub)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("hatgt did not log %q", sub)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// stop sends SIGTERM and returns the exit status.
func (p *proc) stop() int {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(90 * time.Second):
		p.t.Fatal("hatgt did not exit after SIGTERM")
	}
	return p.cmd.ProcessState.ExitCode()
}

// iscsiTool runs a libiscsi tool with a generous deadline.
func iscsiTool(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// ietSample returns testdata/ietd.conf with its Lun on a fresh file, a
// loopback portal on a free port, and extra global lines, written to dir.
func ietSample(t *testing.T, dir string, extra string) string {
	t.Helper()
	text, err := os.ReadFile("../../config/testdata/ietd.conf")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "sdc.img")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(text), "Path=/dev/sdc", "Path="+img, 1)
	if conf == string(text) {
		t.Fatal("the sample has no Path=/dev/sdc to rewrite")
	}
	path := filepath.Join(dir, "ietd.conf")
	if err := os.WriteFile(path, []byte("Portal 127.0.0.1:0\n"+extra+conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const ietTarget = "iqn.2001-04.com.example:storage.disk2.sys1.xyz"

// TestIETSampleServes serves IET's sample config and logs in with libiscsi:
// discovery needs the global IncomingUser, the target its own.
func TestIETSampleServes(t *testing.T) {
	needLibiscsi(t)
	bin := buildHatgt(t)
	dir := t.TempDir()
	conf := ietSample(t, dir, "InitiatorsAllowFile "+mustAbs(t, "../../config/testdata/initiators.allow")+"\n")

	out, err := exec.Command(bin, "serve", "--config", conf, "--check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK, 1 targets, 1 LUNs, 6 warnings") {
		t.Fatalf("--check: %v\n%s", err, out)
	}

	p := startHatgt(t, bin, "serve", "--config", conf)
	addr := p.addr()
	for _, cred := range []string{"", "joe%wrong-secret-1@", "jim%joe-disc-secret@"} {
		if out, err := iscsiTool("iscsi-ls", "iscsi://"+cred+addr); err == nil {
			t.Errorf("discovery with credentials %q succeeded:\n%s", cred, out)
		}
	}
	out2, err := iscsiTool("iscsi-ls", "iscsi://joe%joe-disc-secret@"+addr)
	if err != nil || !strings.Contains(out2, "Target:"+ietTarget) {
		t.Errorf("discovery with the global IncomingUser: %v\n%s", err, out2)
	}

	// Mutual CHAP: libiscsi checks the target's answer (OutgoingUser).
	if out, err := iscsiTool("iscsi-ls", "iscsi://joe%joe-disc-secret@"+addr+"?target_user=jack&target_password=12charsecret"); err != nil || !strings.Contains(out, ietTarget) {
		t.Errorf("discovery with mutual CHAP: %v\n%s", err, out)
	}
	if out, err := iscsiTool("iscsi-ls", "iscsi://joe%joe-disc-secret@"+addr+"?target_user=jack&target_password=not-the-secret"); err == nil {
		t.Errorf("discovery accepted a target answering with another secret:\n%s", out)
	}

	lun := "@" + addr + "/" + ietTarget + "/0"
	if out, err := iscsiTool("iscsi-inq", "iscsi://joe%joe-tgt-secret1"+lun+"?target_user=jim&target_password=12charpasswd"); err != nil || !strings.Contains(out, "DIRECT_ACCESS") {
		t.Errorf("login with mutual CHAP: %v\n%s", err, out)
	}
	if out, err := iscsiTool("iscsi-inq", "iscsi://joe%joe-disc-secret"+lun); err == nil {
		t.Errorf("login with the discovery secret succeeded:\n%s", out)
	}
	out3, err := iscsiTool("iscsi-inq", "-e", "1", "-c", "128", "iscsi://joe%joe-tgt-secret1"+lun)
	if err != nil || !strings.Contains(out3, "xyz") {
		t.Errorf("VPD 0x80 through the target's IncomingUser (want ScsiSN xyz): %v\n%s", err, out3)
	}
	// iscsi-inq does not print binary designators: the NAA that ScsiId
	// sets is checked by TestScsiIDSetsDesignator.
	out4, err := iscsiTool("iscsi-inq", "-e", "1", "-c", "131", "iscsi://joe%joe-tgt-secret1"+lun)
	if err != nil || !strings.Contains(out4, "Designator Type:(3) NAA") || !strings.Contains(out4, "[HATGT   xyz]") {
		t.Errorf("VPD 0x83: %v\n%s", err, out4)
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit status after SIGTERM = %d", code)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSIGHUPReloadsConfig changes the file of a running server and sends
// SIGHUP: a new target and discovery CHAP take effect, a broken file is
// logged with its line and changes nothing, and the process lives on.
func TestSIGHUPReloadsConfig(t *testing.T) {
	needLibiscsi(t)
	bin := buildHatgt(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "hatgt.conf")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(strings.ReplaceAll(text, "DIR", dir)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const one = "Portal 127.0.0.1:0\nTarget iqn.2026-11.io.hatgt:one\n    Lun 0 Path=DIR/one.img,Size=4M\n"
	write(one)
	p := startHatgt(t, bin, "serve", "--config", conf)
	addr := p.addr()
	if out, err := iscsiTool("iscsi-ls", "iscsi://"+addr); err != nil || strings.Contains(out, "hatgt:two") {
		t.Fatalf("before the reload: %v\n%s", err, out)
	}

	// A second target, discovery CHAP, and another portal (ignored).
	write(strings.Replace(one, "Portal 127.0.0.1:0\n", "Portal 127.0.0.1:0\nIncomingUser joe joe-disc-secret\n", 1) +
		"Target iqn.2026-11.io.hatgt:two\n    Lun 0 Path=DIR/two.img,Size=4M\n    MaxBurstLength 65536\n")
	p.signal(syscall.SIGHUP)
	p.waitLog("configuration reloaded", 1)
	if out, err := iscsiTool("iscsi-ls", "iscsi://"+addr); err == nil {
		t.Errorf("discovery without CHAP after the reload set it:\n%s", out)
	}
	out, err := iscsiTool("iscsi-ls", "iscsi://joe%joe-disc-secret@"+addr)
	if err != nil || !strings.Contains(out, "hatgt:one") || !strings.Contains(out, "hatgt:two") {
		t.Errorf("discovery after the reload: %v\n%s", err, out)
	}
	if out, err := iscsiTool("iscsi-inq", "iscsi://"+addr+"/iqn.2026-11.io.hatgt:two/0"); err != nil || !strings.Contains(out, "DIRECT_ACCESS") {
		t.Errorf("INQUIRY of the new target: %v\n%s", err, out)
	}

	// A broken file: logged with its line, nothing changes.
	write(one + "    MaxBurstLenght 65536\n")
	p.signal(syscall.SIGHUP)
	p.waitLog("the running configuration stays", 1)
	if !strings.Contains(p.stderr.String(), `hatgt.conf:4: unknown directive \"MaxBurstLenght\" in Target block (did you mean \"MaxBurstLength\"?)`) {
		t.Errorf("the reload's error is not logged with its line:\n%s", p.stderr.String())
	}
	if out, err := iscsiTool("iscsi-inq", "iscsi://"+addr+"/iqn.2026-11.io.hatgt:two/0"); err != nil {
		t.Errorf("the target of the running config is gone after a broken reload: %v\n%s", err, out)
	}

	// The target removed.
	write(one)
	p.signal(syscall.SIGHUP)
	p.waitLog("configuration reloaded", 2)
	if out, err := iscsiTool("iscsi-ls", "iscsi://"+addr); err != nil || strings.Contains(out, "hatgt:two") {
		t.Errorf("discovery after removing a target (and discovery CHAP): %v\n%s", err, out)
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit status after SIGTERM = %d", code)
	}
}

// TestSIGHUPIgnoredInDevMode: serve --dev has no file; SIGHUP is logged
// and the server carries on.
func TestSIGHUPIgnoredInDevMode(t *testing.T) {
	needLibiscsi(t)
	bin := buildHatgt(t)
	p := startHatgt(t, bin, "serve", "--dev", "--data-dir", t.TempDir(), "--iscsi-addr", "127.0.0.1:0")
	addr := p.addr()
	p.signal(syscall.SIGHUP)
	p.waitLog("SIGHUP ignored", 1)
	if out, err := iscsiTool("iscsi-ls", "iscsi://"+addr); err != nil || !strings.Contains(out, devTargetName) {
		t.Errorf("after SIGHUP: %v\n%s", err, out)
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit status after SIGTERM = %d", code)
	}
}

// TestSIGHUPIgnoredInClusterMode: a cluster node's config is in Raft;
// SIGHUP is logged and the node carries on.
func TestSIGHUPIgnoredInClusterMode(t *testing.T) {
	bin := buildHatgt(t)
	ip := ""
	for try := range 50 {
		cand := fmt.Sprintf("127.0.%d.77", 100+(os.Getpid()+try*7)%150)
		if portsFree(cand, 3260, 3270, 3271, 3272, 3273) {
			ip = cand
			break
		}
	}
	if ip == "" {
		t.Skip("no free loopback address for a cluster node")
	}
	p := startHatgt(t, bin, "serve", "--node-id", "n1", "--bind", ip, "--data-dir", t.TempDir(), "--bootstrap")
	p.waitLog("msg=", 1) // the node is running and logging
	p.signal(syscall.SIGHUP)
	p.waitLog("SIGHUP ignored", 1)
	if !p.alive() {
		t.Fatal("the cluster node died of SIGHUP")
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit status after SIGTERM = %d", code)
	}
}

func portsFree(ip string, ports ...int) bool {
	for _, port := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, fmt.Sprint(port)))
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}
