package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const devTarget = "iqn.2026-11.io.hatgt:dev"

// hatgtBin is the binary TestMain builds once for every test.
var hatgtBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hatgt-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hatgtBin = filepath.Join(dir, "hatgt")
	build := exec.Command("go", "build", "-o", hatgtBin, "../cmd/hatgt")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "test: building hatgt failed:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needTools skips the test when a client program is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	pkgs := map[string]string{"iscsi-ls": "libiscsi-bin", "iscsi-inq": "libiscsi-bin", "iscsi-readcapacity16": "libiscsi-bin", "iscsi-test-cu": "libiscsi-bin", "qemu-img": "qemu-utils and qemu-block-extra"}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install %s); skipping", tool, pkgs[tool])
		}
	}
}

// server is a running "hatgt serve".
type server struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string // the portal, host:port
	stderr *syncBuffer
	done   chan struct{}
	err    error // Wait's result, valid after done
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// stderrContains waits until the server's stderr contains sub, at most d
// (a bound against a broken server, not a measurement).
func (s *server) stderrContains(sub string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if strings.Contains(s.stderr.String(), sub) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDev starts "hatgt serve --dev" on a free loopback port with its data
// in dataDir, and waits until it prints its portal.
func startDev(t *testing.T, dataDir string) *server {
	t.Helper()
	return startServer(t, "serve", "--dev", "--data-dir", dataDir, "--iscsi-addr", "127.0.0.1:0", "--log-level", "debug")
}

func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	s := &server{t: t, stderr: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(hatgtBin, args...)
	s.cmd.Stderr = s.stderr
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	portal := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if f := strings.Fields(line); len(f) == 2 && f[0] == "portal" {
				select {
				case portal <- f[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("hatgt %s stderr:\n%s", strings.Join(args, " "), s.stderr.String())
		}
	})
	// The deadline only stops a broken server from hanging the run; it
	// does not measure anything.
	select {
	case s.addr = <-portal:
		return s
	case <-s.done:
		t.Fatalf("hatgt exited before serving (%v); stderr:\n%s", s.err, s.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("hatgt printed no portal within a minute; stderr:\n%s", s.stderr.String())
	}
	return nil
}

// stop sends SIGTERM and returns the exit status.
func (s *server) stop() int {
	s.t.Helper()
	return s.stopWith(syscall.SIGTERM)
}

// stopWith sends sig and returns the exit status.
func (s *server) stopWith(sig syscall.Signal) int {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("%v: %v", sig, err)
	}
	select {
	case <-s.done:
	case <-time.After(90 * time.Second):
		s.kill()
		s.t.Fatalf("hatgt did not exit after %v; stderr:\n%s", sig, s.stderr.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

func (s *server) kill() {
	select {
	case <-s.done:
	default:
		s.cmd.Process.Kill()
		<-s.done
	}
}

func (s *server) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *server) lunURL(lun int) string {
	return fmt.Sprintf("iscsi://%s/%s/%d", s.addr, devTarget, lun)
}

// runTool runs a client program with a generous deadline and returns its
// combined output; a non-zero exit fails the test.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := tool(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func tool(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
