package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hatgt/hatgt/agent"
	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/internal/logging"
)

// Default ports of a cluster node, all on its --bind address.
const (
	defaultISCSIPort  = 3260
	defaultAPIPort    = 3270
	defaultRaftPort   = 3271
	defaultGossipPort = 3272
	defaultReplPort   = 3273
)

const clusterServeUsage = `Usage:
  hatgt serve --node-id ID --bind IP [--data-dir DIR] --bootstrap
  hatgt serve --node-id ID --bind IP [--data-dir DIR] --join PEER-IP:APIPORT

runs one node of a hatgt cluster. The first node of a new cluster starts
with --bootstrap; every other node starts with --join and the admin API
address of any member. A node that restarts (same --node-id and
--data-dir) finds its cluster again by itself; --bootstrap and --join are
then ignored.

Every port is on the --bind address: iSCSI 3260, admin API 3270, Raft 3271,
gossip 3272 (TCP and UDP), replication 3273.

The admin token (HATGT_TOKEN, or --token-file) must be the same on every
node; without one the admin API only serves a loopback --bind. --gossip-key
(base64 of 16, 24 or 32 bytes, e.g. "openssl rand -base64 32"; or
HATGT_GOSSIP_KEY) encrypts gossip and must be the same on every node.

The node serves every target of the cluster and the LUNs it owns; its
backing files are DIR/luns/IQN/lunN.img unless the LUN has a path.

SIGTERM or SIGINT stops the node without leaving the cluster (use "hatgt
leave" to leave it).

Flags:
`

// clusterServeFlags are the parsed flags of cluster-mode "hatgt serve".
type clusterServeFlags struct {
	nodeID    string
	dataDir   string
	bind      string
	bootstrap bool
	join      string
	ports     struct{ iscsi, api, raft, gossip, repl int }
	token     string
	gossipKey []byte
	logLevel  slog.Level
	logFormat logging.Format
	shutdown  time.Duration
	// resyncRate caps resync, repair and verify traffic, bytes per second
	// (0: unlimited).
	resyncRate int64
}

func (f *clusterServeFlags) addr(port int) string {
	return net.JoinHostPort(f.bind, strconv.Itoa(port))
}

// clusterModeFlags start cluster mode; singleNodeFlags belong to the
// single-node modes (--dev, --config) only.
var (
	clusterModeFlags = []string{"node-id", "bind", "bootstrap", "join"}
	singleNodeFlags  = []string{"dev", "config", "check", "iscsi-addr"}
)

// flagNames returns the names of the flags in args ("--a=b" gives "a"),
// in order. A value of the previous flag that starts with "-" may count
// as a flag: good enough to choose a mode, which the parser then checks.
func flagNames(args []string) []string {
	var names []string
	for _, a := range args {
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-") {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			names = append(names, name)
		}
	}
	return names
}

// isClusterServe tells whether serve's arguments ask for cluster mode.
func isClusterServe(args []string) bool {
	for _, name := range flagNames(args) {
		if slices.Contains(clusterModeFlags, name) {
			return true
		}
	}
	return false
}

// checkServeMode refuses serve arguments that mix the single-node modes'
// flags with cluster mode's: each parser would otherwise answer "flag
// provided but not defined" for the other's.
func checkServeMode(args []string) error {
	var single, clus string
	for _, name := range flagNames(args) {
		if single == "" && slices.Contains(singleNodeFlags, name) {
			single = name
		}
		if clus == "" && slices.Contains(clusterModeFlags, name) {
			clus = name
		}
	}
	if single == "" || clus == "" {
		return nil
	}
	what := map[string]string{
		"dev":        "--dev is single-node mode (one development target)",
		"config":     "--config is single-node mode (the targets a config file describes)",
		"check":      "--check checks a single-node config file",
		"iscsi-addr": "--iscsi-addr is the portal of single-node mode (a cluster node's is --bind and --iscsi-port)",
	}[single]
	return fmt.Errorf("%s and cannot be combined with cluster flags such as --%s: a cluster node's targets and LUNs live in Raft (hatgt target, lun, acl, chap); drop one or the other (\"hatgt help serve\", \"hatgt serve --bind IP --help\")", what, clus)
}

func parseClusterServeFlags(args []string, getenv func(string) string, usageOut io.Writer) (*clusterServeFlags, error) {
	f := &clusterServeFlags{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.Usage = func() {
		fmt.Fprint(usageOut, clusterServeUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.nodeID, "node-id", "", "this node's `id`, unique in the cluster and the same across restarts")
	fs.StringVar(&f.dataDir, "data-dir", defaultDataDir, "`directory` for the Raft state, the admin socket and LUN files")
	fs.StringVar(&f.bind, "bind", "", "the `IP` address every port of the node listens on and the other nodes reach")
	fs.BoolVar(&f.bootstrap, "bootstrap", false, "form a new cluster with this node as its first member")
	fs.StringVar(&f.join, "join", "", "join the cluster of the member whose admin API is at `ip:port`")
	fs.IntVar(&f.ports.iscsi, "iscsi-port", defaultISCSIPort, "iSCSI portal `port`")
	fs.IntVar(&f.ports.api, "api-port", defaultAPIPort, "admin API `port`")
	fs.IntVar(&f.ports.raft, "raft-port", defaultRaftPort, "Raft `port`")
	fs.IntVar(&f.ports.gossip, "gossip-port", defaultGossipPort, "gossip `port` (TCP and UDP)")
	fs.IntVar(&f.ports.repl, "repl-port", defaultReplPort, "replication `port`")
	tokenFile := fs.String("token-file", "", "`file` holding the admin token (default $HATGT_TOKEN)")
	gossipKey := fs.String("gossip-key", "", "gossip encryption `key`, base64 (default $HATGT_GOSSIP_KEY)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	format := fs.String("log-format", "text", "log `format` on stderr: text (key=value) or json (one object per line)")
	resyncRate := fs.String("resync-rate", "100M", "the most resync, repair and verify may read per second, per LUN (e.g. 50M, 1G; 0: no limit)")
	fs.DurationVar(&f.shutdown, "shutdown-timeout", 30*time.Second, "how long to wait for commands in flight when stopping")
	if err := parseFlags(fs, args, "hatgt serve --bind IP --help"); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *resyncRate != "0" {
		n, err := cluster.ParseSize(*resyncRate)
		if err != nil || n > 1<<50 {
			return nil, fmt.Errorf("--resync-rate %q: want bytes per second with an optional K, M or G suffix (e.g. 100M), or 0 for no limit", *resyncRate)
		}
		f.resyncRate = int64(n)
	}
	var err error
	if f.logLevel, err = logging.ParseLevel(*level); err != nil {
		return nil, err
	}
	if f.logFormat, err = logging.ParseFormat(*format); err != nil {
		return nil, err
	}
	switch {
	case f.nodeID == "":
		return nil, errors.New("--node-id is required in cluster mode")
	case f.bind == "":
		return nil, errors.New("--bind IP is required in cluster mode")
	case f.bootstrap && f.join != "":
		return nil, errors.New("use either --bootstrap (a new cluster) or --join (an existing one), not both")
	case f.shutdown <= 0:
		return nil, errors.New("--shutdown-timeout must be positive")
	}
	if ip := net.ParseIP(f.bind); ip == nil || ip.IsUnspecified() {
		return nil, fmt.Errorf("--bind %q: want the IP address the other nodes reach this one at (not a wildcard)", f.bind)
	}
	if f.join != "" {
		if _, _, err := net.SplitHostPort(f.join); err != nil {
			return nil, fmt.Errorf("--join %q: want the IP:PORT of a member's admin API, e.g. 10.0.0.1:%d", f.join, defaultAPIPort)
		}
	}
	seen := map[int]string{}
	for _, p := range []struct {
		name string
		v    int
	}{{"iscsi", f.ports.iscsi}, {"api", f.ports.api}, {"raft", f.ports.raft}, {"gossip", f.ports.gossip}, {"repl", f.ports.repl}} {
		if p.v < 1 || p.v > 65535 {
			return nil, fmt.Errorf("--%s-port %d: want 1-65535", p.name, p.v)
		}
		if other, ok := seen[p.v]; ok {
			return nil, fmt.Errorf("--%s-port and --%s-port are both %d", other, p.name, p.v)
		}
		seen[p.v] = p.name
	}
	f.token = strings.TrimSpace(getenv("HATGT_TOKEN"))
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token file: %w", err)
		}
		if f.token = strings.TrimSpace(string(b)); f.token == "" {
			return nil, fmt.Errorf("token file %s is empty", *tokenFile)
		}
	}
	key := *gossipKey
	if key == "" {
		key = getenv("HATGT_GOSSIP_KEY")
	}
	if key != "" {
		k, err := cluster.ParseGossipKey(key)
		if err != nil {
			return nil, fmt.Errorf("--gossip-key: %w", err)
		}
		f.gossipKey = k
	}
	return f, nil
}

// serveClusterCommand runs "hatgt serve" in cluster mode: a Raft member
// with its admin API and an iSCSI target kept equal to the cluster state
// by the reconciler.
func serveClusterCommand(args []string, stdout, stderr io.Writer) int {
	usageOut := stderr
	for _, a := range args {
		if isHelp(a) {
			usageOut = stdout
		}
	}
	f, err := parseClusterServeFlags(args, os.Getenv, usageOut)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "hatgt serve: %v\n", err)
		return 2
	}
	// One format for every line the node logs: its own records, Raft's and
	// the cluster package's (hclog), memberlist's and the standard
	// library's (log lines).
	log := logging.New(stderr, f.logFormat, f.logLevel).With("node", f.nodeID)
	slog.SetDefault(log)
	defer ignoreHangups(log, "a cluster node's configuration lives in Raft: change it with hatgt target, lun, acl and chap")()

	apiAddr := f.addr(f.ports.api)
	if err := cluster.CheckExposure(apiAddr, f.token); err != nil {
		reportFailure(stderr, log, f.logFormat, err)
		return 1
	}
	dataDir, err := filepath.Abs(f.dataDir)
	if err == nil {
		err = os.MkdirAll(dataDir, 0o750)
	}
	if err != nil {
		reportFailure(stderr, log, f.logFormat, fmt.Errorf("data dir %s: %v", f.dataDir, unwrapPathError(err)))
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	cc := cluster.DefaultConfig()
	// Retry a failed reconcile (a file that could not be created, a node
	// not registered yet) soon.
	cc.ReconcileInterval = 2 * time.Second
	cc.Logger = logging.HCLog(log, "cluster", "node", f.nodeID)
	a, err := agent.New(ctx, agent.Config{
		NodeID: f.nodeID, DataDir: dataDir, Bootstrap: f.bootstrap, Join: f.join,
		ISCSIAddr: f.addr(f.ports.iscsi), APIAddr: apiAddr, RaftAddr: f.addr(f.ports.raft),
		GossipAddr: f.addr(f.ports.gossip), ReplAddr: f.addr(f.ports.repl),
		Token: f.token, GossipKey: f.gossipKey, ResyncRate: f.resyncRate,
		Cluster: cc, Logger: log,
	}, agent.Deps{})
	if err != nil {
		reportFailure(stderr, log, f.logFormat, err)
		return 1
	}
	printClusterBanner(stdout, f, a)
	failed := a.Run(ctx, f.shutdown)
	stop()
	if failed != nil {
		// Run logged why; this is the last record, in the log's format.
		log.Error("stopped after a failure", "err", failed)
		return 1
	}
	log.Info("stopped")
	return 0
}

func printClusterBanner(w io.Writer, f *clusterServeFlags, a *agent.Agent) {
	var b strings.Builder
	fmt.Fprintf(&b, "hatgt %s node %s is running\n", version, f.nodeID)
	fmt.Fprintf(&b, "  portal  %s\n", a.Portal())
	fmt.Fprintf(&b, "  api     %s\n", a.APIAddr())
	fmt.Fprintf(&b, "  raft    %s\n", f.addr(f.ports.raft))
	fmt.Fprintf(&b, "  gossip  %s\n", f.addr(f.ports.gossip))
	fmt.Fprintf(&b, "  repl    %s\n", f.addr(f.ports.repl))
	switch {
	case f.bootstrap:
		fmt.Fprintf(&b, "bootstrapping a new cluster (on a restart: rejoining it)\n")
	case f.join != "":
		fmt.Fprintf(&b, "joining the cluster through %s\n", f.join)
	}
	fmt.Fprintf(&b, "manage it with: HATGT_ADDR=%s hatgt status\n", a.APIAddr())
	io.WriteString(w, b.String())
	if fl, ok := w.(*os.File); ok {
		fl.Sync()
	}
}
