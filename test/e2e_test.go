package test

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestIscsiLsListsDevTarget(t *testing.T) {
	needTools(t, "iscsi-ls")
	s := startDev(t, t.TempDir())
	out := runTool(t, "iscsi-ls", "-s", "iscsi://"+s.addr)
	if !strings.Contains(out, "Target:"+devTarget) {
		t.Errorf("iscsi-ls does not list %s:\n%s", devTarget, out)
	}
	// iscsi-ls prints block size times the last LBA (READ CAPACITY's
	// value, not the block count), so 1 GiB of 512-byte blocks shows as
	// 1023M.
	if !regexp.MustCompile(`Lun:0\s+Type:DIRECT_ACCESS \(Size:1023M\)`).MatchString(out) {
		t.Errorf("iscsi-ls does not show LUN 0 of 1 GiB:\n%s", out)
	}
	if code := s.stopWith(syscall.SIGINT); code != 0 {
		t.Errorf("exit status after SIGINT = %d, want 0", code)
	}
}

var (
	serialRe = regexp.MustCompile(`Unit Serial Number:\[(\w+)\]`)
)

func TestIscsiInqIdentityIsStableAcrossRestart(t *testing.T) {
	needTools(t, "iscsi-inq")
	dir := t.TempDir()
	identity := func(s *server) (serial, designators string) {
		std := runTool(t, "iscsi-inq", s.lunURL(0))
		if !strings.Contains(std, "HATGT") {
			t.Errorf("standard INQUIRY has no vendor HATGT:\n%s", std)
		}
		vpd80 := runTool(t, "iscsi-inq", "-e", "1", "-c", "128", s.lunURL(0))
		m := serialRe.FindStringSubmatch(vpd80)
		if m == nil {
			t.Fatalf("VPD 0x80 shows no serial number:\n%s", vpd80)
		}
		vpd83 := runTool(t, "iscsi-inq", "-e", "1", "-c", "131", s.lunURL(0))
		if !strings.Contains(vpd83, "Designator Type:(3) NAA") {
			t.Errorf("VPD 0x83 has no NAA designator:\n%s", vpd83)
		}
		return m[1], vpd83
	}
	s := startDev(t, dir)
	serial1, ids1 := identity(s)
	if code := s.stop(); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0", code)
	}
	s = startDev(t, dir)
	serial2, ids2 := identity(s)
	if serial1 != serial2 {
		t.Errorf("serial number changed across restart: %q then %q", serial1, serial2)
	}
	if ids1 != ids2 {
		t.Errorf("device identification changed across restart:\n%s\nthen\n%s", ids1, ids2)
	}
}

// TestQemuImgRoundTripSurvivesRestart writes a random image through
// qemu-img, compares it back, stops the server with SIGTERM, restarts it on
// the same data and compares again.
func TestQemuImgRoundTripSurvivesRestart(t *testing.T) {
	needTools(t, "qemu-img")
	work := t.TempDir()
	src := filepath.Join(work, "random.raw")
	buf := make([]byte, 64<<20)
	rand.Read(buf)
	if err := os.WriteFile(src, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(work, "data")
	s := startDev(t, data)
	url := s.lunURL(0)
	runTool(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, url)
	if out, err := tool("qemu-img", "compare", "-f", "raw", "-F", "raw", src, url); err != nil {
		t.Fatalf("qemu-img compare after write: %v\n%s", err, out)
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("exit status after SIGTERM = %d, want 0", code)
	}
	if !strings.Contains(s.stderr.String(), "stopped") {
		t.Errorf("no clean-stop log line in stderr")
	}

	s = startDev(t, data)
	if out, err := tool("qemu-img", "compare", "-f", "raw", "-F", "raw", src, s.lunURL(0)); err != nil {
		t.Fatalf("qemu-img compare after restart: %v\n%s", err, out)
	}
	// And the comparison can fail: a changed source must differ.
	buf[12345] ^= 0xff
	if err := os.WriteFile(src, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := tool("qemu-img", "compare", "-f", "raw", "-F", "raw", src, s.lunURL(0)); err == nil {
		t.Fatalf("qemu-img compare found a changed image identical:\n%s", out)
	}
}

func TestBadConfigExitsWithLineNumber(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "bad.conf")
	text := "Portal 127.0.0.1:0\nTarget iqn.2026-11.io.hatgt:bad\n    Lun 0 Path=/tmp/x.img,Sise=10M\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(hatgtBin, "serve", "--config", conf).CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() == 0 {
		t.Fatalf("hatgt serve --config bad.conf: err=%v, want a non-zero exit; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), `bad.conf:3: unknown key "Sise" (did you mean "Size"?)`) {
		t.Errorf("output does not name bad.conf:3 and the fix:\n%s", out)
	}
}

func TestServeErrorsAreOneClearLine(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	readOnlyDir := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(readOnlyDir, 0o500); err != nil {
		t.Fatal(err)
	}
	missingLUN := filepath.Join(t.TempDir(), "missing.conf")
	if err := os.WriteFile(missingLUN, []byte("Portal 127.0.0.1:0\nTarget iqn.2026-11.io.hatgt:m\nLun 0 Path=/nonexistent/m.img\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongSize := t.TempDir()
	if err := os.MkdirAll(filepath.Join(wrongSize, "dev"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wrongSize, "dev", "lun0.img"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"port in use", []string{"serve", "--dev", "--data-dir", t.TempDir(), "--iscsi-addr", busy.Addr().String()}, "address already in use"},
		{"data dir unwritable", []string{"serve", "--dev", "--data-dir", readOnlyDir}, "permission denied"},
		{"data dir is a file", []string{"serve", "--dev", "--data-dir", notADir}, "not a directory"},
		{"bad log level", []string{"serve", "--dev", "--log-level", "loud"}, "--log-level"},
		{"dev and config", []string{"serve", "--dev", "--config", "x.conf"}, "not both"},
		{"dev lun of another size", []string{"serve", "--dev", "--data-dir", wrongSize, "--iscsi-addr", "127.0.0.1:0"}, "move it away or use another --data-dir"},
		{"lun file missing", []string{"serve", "--config", missingLUN}, "/nonexistent/m.img does not exist"},
		{"config missing", []string{"serve", "--config", "/nonexistent/hatgt.conf"}, "no such file"},
		{"nothing to serve", []string{"serve"}, "--dev, or --config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "data dir unwritable" && os.Geteuid() == 0 {
				t.Skip("root can write to a mode 0500 directory")
			}
			out, err := exec.Command(hatgtBin, tc.args...).CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() == 0 {
				t.Fatalf("err=%v, want a non-zero exit; output:\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "hatgt") || !strings.Contains(lines[0], tc.want) {
				t.Errorf("want one line starting with hatgt and saying %q, got:\n%s", tc.want, out)
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"help"}, {"--help"}, {"serve", "--help"}, {"help", "serve"}} {
		out, err := exec.Command(hatgtBin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("hatgt %v: %v\n%s", args, err, out)
		}
		if !strings.Contains(string(out), "hatgt") {
			t.Errorf("hatgt %v printed no usage/version:\n%s", args, out)
		}
	}
	if err := exec.Command(hatgtBin, "frobnicate").Run(); err == nil {
		t.Errorf("unknown command exited 0")
	}
}

// TestBadInputDoesNotKillServer sends random bytes and malformed PDUs to
// the portal, then checks that the server still answers a real client.
func TestBadInputDoesNotKillServer(t *testing.T) {
	needTools(t, "iscsi-ls")
	s := startDev(t, t.TempDir())

	garbage := make([]byte, 4096)
	rand.Read(garbage)
	// A Login Request header (opcode 0x03, immediate) claiming a 16 MiB
	// data segment and an AHS, followed by far less than that.
	huge := make([]byte, 48)
	huge[0] = 0x43
	huge[1] = 0x87
	huge[4] = 0xff // TotalAHSLength
	huge[5], huge[6], huge[7] = 0xff, 0xff, 0xff
	// A well-formed Login Request whose text is not key=value at all.
	junkText := []byte("\x00\x00no-equals-sign\x00=\x00" + strings.Repeat("K", 300))
	login := make([]byte, 48)
	login[0] = 0x43
	login[1] = 0x87
	login[5], login[6], login[7] = byte(len(junkText)>>16), byte(len(junkText)>>8), byte(len(junkText))
	binary.BigEndian.PutUint32(login[16:], 1) // ITT
	junkText = append(junkText, make([]byte, (4-len(junkText)%4)%4)...)
	// A SCSI Command before login.
	cmd := make([]byte, 48)
	cmd[0] = 0x01
	cmd[1] = 0x80
	cmd[32] = 0x28

	for _, payload := range [][]byte{garbage, huge, append(login, junkText...), cmd, huge[:20]} {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.Write(payload)
		c.Close()
	}
	if !s.alive() {
		t.Fatalf("hatgt died on bad input:\n%s", s.stderr.String())
	}
	out := runTool(t, "iscsi-ls", "-s", "iscsi://"+s.addr)
	if !strings.Contains(out, devTarget) {
		t.Errorf("iscsi-ls after bad input does not list the target:\n%s", out)
	}
}

// TestConfigFileTargets serves two targets from a config file: one with a
// read-write and a read-only 4096-byte-sector LUN, one behind CHAP.
func TestConfigFileTargets(t *testing.T) {
	needTools(t, "iscsi-ls", "iscsi-inq", "iscsi-readcapacity16")
	dir := t.TempDir()
	ro := filepath.Join(dir, "ro.img")
	if err := os.WriteFile(ro, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "hatgt.conf")
	text := "Portal 127.0.0.1:0\n" +
		"Target iqn.2026-11.io.hatgt:open\n" +
		"    Lun 0 Path=" + filepath.Join(dir, "a.img") + ",Size=64M,IOMode=wt\n" +
		"    Lun 3 Path=" + ro + ",Sector=4096,IOMode=ro\n" +
		"Target iqn.2026-11.io.hatgt:chap\n" +
		"    Lun 0 Path=" + filepath.Join(dir, "c.img") + ",Size=16M\n" +
		"    IncomingUser alice alice-secret-1\n" +
		"Target iqn.2026-11.io.hatgt:acl\n" +
		"    Lun 0 Path=" + filepath.Join(dir, "d.img") + ",Size=1M\n" +
		"    InitiatorAllow iqn.2026-11.io.hatgt:friend\n"
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "serve", "--config", conf)

	out := runTool(t, "iscsi-ls", "iscsi://"+s.addr)
	for _, want := range []string{"Target:iqn.2026-11.io.hatgt:open", "Target:iqn.2026-11.io.hatgt:chap"} {
		if !strings.Contains(out, want) {
			t.Errorf("discovery does not list %q:\n%s", want, out)
		}
	}
	out = runTool(t, "iscsi-readcapacity16", "iscsi://"+s.addr+"/iqn.2026-11.io.hatgt:open/3")
	for _, want := range []string{"LOGICAL BLOCK LENGTH IN BYTES:4096", "Total size:1048576"} {
		if !strings.Contains(out, want) {
			t.Errorf("READ CAPACITY (16) of LUN 3 lacks %q:\n%s", want, out)
		}
	}
	out = runTool(t, "iscsi-readcapacity16", "iscsi://"+s.addr+"/iqn.2026-11.io.hatgt:open/0")
	if !strings.Contains(out, "Total size:67108864") {
		t.Errorf("READ CAPACITY (16) of LUN 0 is not 64 MiB:\n%s", out)
	}
	chapURL := func(cred string) string {
		return "iscsi://" + cred + s.addr + "/iqn.2026-11.io.hatgt:chap/0"
	}
	if out := runTool(t, "iscsi-inq", chapURL("alice%alice-secret-1@")); !strings.Contains(out, "DIRECT_ACCESS") {
		t.Errorf("INQUIRY with the right CHAP secret:\n%s", out)
	}
	for _, cred := range []string{"", "alice%wrong-secret-1@", "bob%alice-secret-1@"} {
		if out, err := tool("iscsi-inq", chapURL(cred)); err == nil {
			t.Errorf("login with credentials %q succeeded:\n%s", cred, out)
		}
	}
	aclURL := "iscsi://" + s.addr + "/iqn.2026-11.io.hatgt:acl/0"
	if out := runTool(t, "iscsi-inq", "-i", "iqn.2026-11.io.hatgt:friend", aclURL); !strings.Contains(out, "DIRECT_ACCESS") {
		t.Errorf("INQUIRY from an allowed initiator:\n%s", out)
	}
	if out, err := tool("iscsi-inq", "-i", "iqn.2026-11.io.hatgt:stranger", aclURL); err == nil {
		t.Errorf("login from an initiator not in InitiatorAllow succeeded:\n%s", out)
	}
	if code := s.stop(); code != 0 {
		t.Errorf("exit status after SIGTERM = %d", code)
	}
}

// TestSigtermDuringWrites stops the server while qemu-img is writing: the
// server must still exit 0, and serve the same LUN again afterwards.
func TestSigtermDuringWrites(t *testing.T) {
	needTools(t, "qemu-img", "iscsi-inq")
	work := t.TempDir()
	src := filepath.Join(work, "random.raw")
	buf := make([]byte, 256<<20)
	rand.Read(buf[:1<<20])
	for off := 1 << 20; off < len(buf); off += 1 << 20 {
		copy(buf[off:off+1<<20], buf[:1<<20])
		buf[off] ^= byte(off >> 20) // no two MiB alike, so qemu-img must send each
	}
	if err := os.WriteFile(src, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(work, "data")
	s := startDev(t, data)
	writer := exec.Command("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, s.lunURL(0))
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	writerDone := make(chan error, 1)
	go func() { writerDone <- writer.Wait() }()
	// Wait until the writer has logged in, so that the signal finds
	// commands in flight (if the copy is already over, that is fine too:
	// either way the server must exit 0).
	finished := false
	for !finished && strings.Count(s.stderr.String(), "login complete") == 0 {
		select {
		case <-writerDone:
			finished = true
		case <-s.done:
			t.Fatalf("hatgt exited during the copy:\n%s", s.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Logf("copy finished before SIGTERM: %v", finished)
	if code := s.stop(); code != 0 {
		t.Fatalf("exit status after SIGTERM during writes = %d, want 0; stderr:\n%s", code, s.stderr.String())
	}
	if !finished {
		// libiscsi reconnects forever when its connection drops, so the
		// writer does not end on its own.
		writer.Process.Kill()
		<-writerDone
	}

	s = startDev(t, data)
	if out := runTool(t, "iscsi-inq", s.lunURL(0)); !strings.Contains(out, "DIRECT_ACCESS") {
		t.Errorf("LUN not served after restart:\n%s", out)
	}
}

// TestFullFilesystem serves the dev LUN from a 32 MiB tmpfs: start-up warns
// that the thin LUN is larger than the free space, a write beyond it fails
// with an error qemu-img reports as "No space left on device", and the
// server keeps serving and exits 0.
func TestFullFilesystem(t *testing.T) {
	needTools(t, "qemu-img", "iscsi-ls")
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })

	s := startDev(t, dir)
	// stderr reaches the buffer through a copying goroutine: the warning,
	// logged before the portal line on stdout, may still be on its way.
	if !s.stderrContains("larger than the free space", 10*time.Second) {
		t.Errorf("no warning about a LUN larger than the free space:\n%s", s.stderr.String())
	}
	src := filepath.Join(t.TempDir(), "random.raw")
	buf := make([]byte, 48<<20)
	rand.Read(buf)
	if err := os.WriteFile(src, buf, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := tool("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, s.lunURL(0))
	if err == nil {
		t.Fatalf("writing 48 MiB to a 32 MiB filesystem succeeded:\n%s", out)
	}
	if !strings.Contains(out, "No space left on device") {
		t.Errorf("qemu-img did not see a full device:\n%s", out)
	}
	if out := runTool(t, "iscsi-ls", "-s", "iscsi://"+s.addr); !strings.Contains(out, "Lun:0") {
		t.Errorf("server does not list its LUN after the full filesystem:\n%s", out)
	}
	if code := s.stop(); code != 0 {
		t.Errorf("exit status after SIGTERM = %d, want 0", code)
	}
}

func TestIPv6Portal(t *testing.T) {
	needTools(t, "iscsi-ls")
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l.Close()
	}
	s := startServer(t, "serve", "--dev", "--data-dir", t.TempDir(), "--iscsi-addr", "[::1]:0")
	if !strings.HasPrefix(s.addr, "[::1]:") {
		t.Fatalf("portal %q is not on [::1]", s.addr)
	}
	out := runTool(t, "iscsi-ls", "-s", "iscsi://"+s.addr)
	if !strings.Contains(out, "Target:"+devTarget+" Portal:"+s.addr) || !strings.Contains(out, "Lun:0") {
		t.Errorf("iscsi-ls over IPv6:\n%s", out)
	}
}
