package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/internal/logging"
)

const devClusterUsage = `Usage:
  hatgt dev --nodes N [--data-dir DIR] [--first-ip 127.0.0.11]

starts a local cluster of N hatgt processes on consecutive loopback
addresses (127.0.0.11, 127.0.0.12, ...; Linux routes all of 127.0.0.0/8 to
the loopback interface), each with the default ports and its data in
DIR/nI (kept across runs: a second run finds the same cluster again). Node
n1 bootstraps the cluster and the others join it. Each node logs to
DIR/nI.log (--log-format text or json). Ctrl-C stops them all; SIGHUP is
ignored.

Flags:
`

// devNode is one process of a local dev cluster.
type devNode struct {
	id, ip, dir, log string
	cmd              *exec.Cmd
	done             chan struct{}
}

func (n *devNode) api() string { return net.JoinHostPort(n.ip, strconv.Itoa(defaultAPIPort)) }

// devClusterCommand runs "hatgt dev --nodes N".
func devClusterCommand(args []string, stdout, stderr io.Writer) int {
	usageOut := stderr
	for _, a := range args {
		if isHelp(a) {
			usageOut = stdout
		}
	}
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.Usage = func() {
		fmt.Fprint(usageOut, devClusterUsage)
		fs.PrintDefaults()
	}
	nodes := fs.Int("nodes", 0, "`number` of nodes to start (1-9)")
	dataDir := fs.String("data-dir", filepath.Join(defaultDataDir, "cluster"), "`directory` holding each node's data dir and log")
	firstIP := fs.String("first-ip", "127.0.0.11", "loopback `address` of the first node; the others follow it")
	logFormat := fs.String("log-format", "text", "the nodes' log `format`: text (key=value) or json (one object per line)")
	err := parseFlags(fs, args, "hatgt help dev")
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err == nil {
		_, err = logging.ParseFormat(*logFormat)
	}
	ip := net.ParseIP(*firstIP).To4()
	switch {
	case err != nil:
	case *nodes < 1 || *nodes > 9:
		err = fmt.Errorf("--nodes %d: want 1 to 9", *nodes)
	case ip == nil || !ip.IsLoopback():
		err = fmt.Errorf("--first-ip %q: want an IPv4 loopback address such as 127.0.0.11", *firstIP)
	case int(ip[3])+*nodes-1 > 254:
		err = fmt.Errorf("--first-ip %s leaves no room for %d nodes", *firstIP, *nodes)
	}
	if err != nil {
		fmt.Fprintf(stderr, "hatgt dev: %v\n", err)
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "hatgt dev: cannot find the hatgt binary: %v\n", err)
		return 1
	}
	root, err := filepath.Abs(*dataDir)
	if err == nil {
		err = os.MkdirAll(root, 0o750)
	}
	if err != nil {
		fmt.Fprintf(stderr, "hatgt dev: data dir %s: %v\n", *dataDir, unwrapPathError(err))
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// A hangup (the terminal closed, an ssh session dropped) must not kill
	// the cluster's parent and so, with it, the nodes: it is reported and
	// ignored, like the nodes do.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var ns []*devNode
	defer func() { stopDevNodes(ns, stderr) }()
	for i := range *nodes {
		nip := net.IPv4(ip[0], ip[1], ip[2], ip[3]+byte(i)).String()
		n := &devNode{id: fmt.Sprintf("n%d", i+1), ip: nip, done: make(chan struct{})}
		n.dir = filepath.Join(root, n.id)
		n.log = filepath.Join(root, n.id+".log")
		args := []string{"serve", "--node-id", n.id, "--bind", n.ip, "--data-dir", n.dir, "--log-format", *logFormat}
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", ns[0].api())
		}
		if err := n.start(exe, args); err != nil {
			fmt.Fprintf(stderr, "hatgt dev: start %s: %v\n", n.id, err)
			return 1
		}
		ns = append(ns, n)
	}

	fmt.Fprintf(stdout, "hatgt dev: starting %d nodes in %s ...\n", len(ns), root)
	if err := waitDevCluster(ctx, ns); err != nil {
		fmt.Fprintf(stderr, "hatgt dev: %v (see the logs in %s)\n", err, root)
		return 1
	}
	printDevCluster(stdout, ns, root, cliName())

	exited := make(chan *devNode, len(ns))
	for _, n := range ns {
		go func() {
			<-n.done
			exited <- n
		}()
	}
	for {
		select {
		case <-hup:
			fmt.Fprintln(stderr, "hatgt dev: SIGHUP ignored: the nodes keep running (stop them with Ctrl-C or SIGTERM)")
		case <-ctx.Done():
			fmt.Fprintln(stdout, "hatgt dev: stopping the cluster")
			return 0
		case n := <-exited:
			fmt.Fprintf(stderr, "hatgt dev: node %s exited (%v); see %s\n", n.id, n.cmd.ProcessState, n.log)
			alive := 0
			for _, o := range ns {
				select {
				case <-o.done:
				default:
					alive++
				}
			}
			if alive == 0 {
				return 1
			}
		}
	}
}

func (n *devNode) start(exe string, args []string) error {
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	n.cmd = exec.Command(exe, args...)
	// The log holds the node's stderr only, so that every line has the
	// log format; its stdout is the start banner, which printDevCluster
	// sums up for all nodes.
	n.cmd.Stdout, n.cmd.Stderr = nil, logf
	// Own process group: the terminal's Ctrl-C reaches only "hatgt dev",
	// which then stops the nodes in order.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	go func() {
		n.cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	return nil
}

// waitDevCluster waits until the first node reports every node a voter
// and a leader elected.
func waitDevCluster(ctx context.Context, ns []*devNode) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c := cluster.NewClient(ns[0].api(), "", nil)
	var last string
	for {
		for _, n := range ns {
			select {
			case <-n.done:
				return fmt.Errorf("node %s exited during start-up (%v)", n.id, n.cmd.ProcessState)
			default:
			}
		}
		qctx, qcancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(qctx)
		qcancel()
		if err == nil {
			voters := 0
			for _, ns := range st.Nodes {
				if ns.Voter {
					voters++
				}
			}
			if st.Leader != "" && voters == len(ns) {
				return nil
			}
			last = fmt.Sprintf("%d of %d voters, leader %q", voters, len(ns), st.Leader)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready: %s", last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// printDevCluster says how to reach the cluster, with commands that work
// as written: cli is how to run this binary (cliName).
func printDevCluster(w io.Writer, ns []*devNode, root, cli string) {
	fmt.Fprintf(w, "hatgt dev: %d-node cluster is up\n", len(ns))
	for _, n := range ns {
		fmt.Fprintf(w, "  %s  portal %s:%d  api %s  log %s\n", n.id, n.ip, defaultISCSIPort, n.api(), n.log)
	}
	const demo = "iqn.2026-11.io.hatgt:demo"
	fmt.Fprintf(w, "try (in another shell):\n")
	fmt.Fprintf(w, "  export HATGT_ADDR=%s\n", ns[0].api())
	fmt.Fprintf(w, "  %s status\n", cli)
	fmt.Fprintf(w, "  %s target create %s\n", cli, demo)
	fmt.Fprintf(w, "  %s lun create %s --lun 0 --size 1G   # prints the LUN's iscsi:// URL\n", cli, demo)
	// Discovery answers on every node's portal; a login (iscsi-ls -s,
	// qemu-img) must go to the LUN's owner: libiscsi's tools test the
	// unit and fail on a standby copy's portal.
	fmt.Fprintf(w, "  iscsi-ls iscsi://%s:%d   # discovery: every node's portal answers\n", ns[0].ip, defaultISCSIPort)
	fmt.Fprintf(w, "  # qemu-img info and iscsi-inq take the URL lun create printed (its owner's portal)\n")
	fmt.Fprintf(w, "stop with Ctrl-C; the data stays in %s\n", root)
}

// cliName is how to run this binary in the commands a banner prints:
// "hatgt" when that is on PATH and is this binary, "go run ./cmd/hatgt"
// for a binary go run built, else its absolute path.
func cliName() string {
	exe, err := os.Executable()
	if err != nil {
		return "hatgt"
	}
	if p, err := exec.LookPath("hatgt"); err == nil {
		a, errA := os.Stat(p)
		b, errB := os.Stat(exe)
		if errA == nil && errB == nil && os.SameFile(a, b) {
			return "hatgt"
		}
	}
	if strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return "go run ./cmd/hatgt"
	}
	return exe
}

// stopDevNodes sends SIGTERM to every node still running and waits for
// them, killing those that do not stop within 30 seconds.
func stopDevNodes(ns []*devNode, stderr io.Writer) {
	for _, n := range ns {
		n.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(30 * time.Second)
	for _, n := range ns {
		select {
		case <-n.done:
		case <-deadline:
			fmt.Fprintf(stderr, "hatgt dev: %s did not stop, killing it\n", n.id)
			n.cmd.Process.Kill()
			<-n.done
		}
	}
}
