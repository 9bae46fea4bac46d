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
	"strings"
	"syscall"
	"time"

	"github.com/hatgt/hatgt/agent"
	"github.com/hatgt/hatgt/config"
	"github.com/hatgt/hatgt/internal/logging"
)

const serveUsage = `Usage:
  hatgt serve --dev [--data-dir DIR] [--iscsi-addr HOST:PORT]
  hatgt serve --config FILE [--check]
  hatgt serve --node-id ID --bind IP ...   (a cluster node: "hatgt serve --bind IP --help")

--dev serves one target, ` + devTargetName + `, with LUN 0: a 1 GiB sparse
file DIR/dev/lun0.img (created on first start, kept across restarts),
write-back, 512-byte sectors, thin provisioned, no authentication.

--config serves what FILE describes (format: README.md, "Config file");
with --check it only checks FILE and prints it with every default filled in.

SIGTERM or SIGINT stops the node: commands in flight finish (up to
--shutdown-timeout), then every LUN is flushed and closed. SIGHUP reloads
FILE (README.md, "Reloading"); with --dev, and in cluster mode, it is
ignored.

Flags:
`

// serveFlags are the parsed flags of "hatgt serve".
type serveFlags struct {
	dev             bool
	configFile      string
	dataDir         string
	iscsiAddr       string
	logLevel        slog.Level
	logFormat       logging.Format
	shutdownTimeout time.Duration
	check           bool
}

func parseServeFlags(args []string, stderr io.Writer) (*serveFlags, error) {
	f := &serveFlags{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, serveUsage)
		fs.PrintDefaults()
	}
	fs.BoolVar(&f.dev, "dev", false, "serve the development target "+devTargetName)
	fs.StringVar(&f.configFile, "config", "", "serve the targets described in this config `file`")
	fs.StringVar(&f.dataDir, "data-dir", defaultDataDir, "with --dev: `directory` holding dev/lun0.img")
	fs.StringVar(&f.iscsiAddr, "iscsi-addr", "", "with --dev: iSCSI portal `host:port` (default "+config.DefaultPortal+"; port 0 picks a free one)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	format := fs.String("log-format", "text", "log `format` on stderr: text (key=value) or json (one object per line)")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long to wait for commands in flight when stopping")
	fs.BoolVar(&f.check, "check", false, "with --config: check the file, print it as hatgt reads it, and exit")
	if err := parseFlags(fs, args, "hatgt help serve"); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if f.logLevel, err = logging.ParseLevel(*level); err != nil {
		return nil, err
	}
	if f.logFormat, err = logging.ParseFormat(*format); err != nil {
		return nil, err
	}
	switch {
	case f.dev && f.configFile != "":
		return nil, errors.New("use either --dev or --config, not both")
	case !f.dev && f.configFile == "":
		return nil, errors.New("say what to serve: --dev, or --config FILE")
	case f.check && f.configFile == "":
		return nil, errors.New("--check needs --config FILE")
	case f.configFile != "" && f.iscsiAddr != "":
		return nil, errors.New("--iscsi-addr is for --dev; with --config use Portal lines in the file")
	case f.shutdownTimeout <= 0:
		return nil, errors.New("--shutdown-timeout must be positive")
	}
	if f.iscsiAddr == "" {
		f.iscsiAddr = config.DefaultPortal
	}
	return f, nil
}

func serveCommand(args []string, stdout, stderr io.Writer) int {
	usageOut := stderr
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			usageOut = stdout // asked for: not an error
		}
	}
	if err := checkServeMode(args); err != nil {
		fmt.Fprintf(stderr, "hatgt serve: %v\n", err)
		return 2
	}
	if isClusterServe(args) {
		return serveClusterCommand(args, stdout, stderr)
	}
	f, err := parseServeFlags(args, usageOut)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "hatgt serve: %v\n", err)
		return 2
	}
	log := logging.New(stderr, f.logFormat, f.logLevel)
	slog.SetDefault(log) // the standard library's log package too
	log.Debug("scheduler", "GOMAXPROCS", setProcs())

	var cfg *config.Config
	if f.dev {
		cfg, err = devConfig(f.dataDir, f.iscsiAddr)
	} else {
		cfg, err = config.ParseFile(f.configFile)
	}
	if err != nil {
		reportFailure(stderr, log, f.logFormat, err)
		return 1
	}
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w.Error())
	}
	if f.check {
		luns := 0
		for _, t := range cfg.Targets {
			luns += len(t.LUNs)
		}
		fmt.Fprintf(stdout, "# %s: OK, %d targets, %d LUNs, %d warnings; as hatgt reads it (secrets masked):\n%s",
			cfg.File, len(cfg.Targets), luns, len(cfg.Warnings), maskSecrets(cfg).Format())
		return 0
	}

	// Catch signals before anything is opened, so a SIGTERM that arrives
	// during start-up still closes the LUNs cleanly, and a SIGHUP never
	// kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	n, err := agent.StartSingle(cfg, log)
	if err != nil {
		reportFailure(stderr, log, f.logFormat, err)
		return 1
	}
	printBanner(stdout, cfg, n, f.dev)

	serveErr := n.Serve()
	var failed error
	for running := true; running; {
		select {
		case <-ctx.Done():
			log.Info("signal received, shutting down", "timeout", f.shutdownTimeout)
			running = false
		case err := <-serveErr:
			failed = err
			log.Error("portal failed, shutting down", "err", err)
			running = false
		case <-hup:
			if f.dev {
				log.Info("SIGHUP ignored: --dev has no configuration file to reload")
				continue
			}
			n.ReloadFile(f.configFile)
		}
	}
	stop() // a second signal now kills the process the default way

	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		log.Error("shutdown", "err", err)
		if failed == nil {
			failed = err
		}
	}
	if failed != nil {
		reportFailure(stderr, log, f.logFormat, failed)
		return 1
	}
	log.Info("stopped")
	return 0
}

// ignoreHangups keeps SIGHUP from killing the process, logging each one
// with why it changes nothing; the returned function stops that.
func ignoreHangups(log *slog.Logger, why string) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				log.Info("SIGHUP ignored: " + why)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// maskSecrets returns a copy of cfg with every CHAP secret replaced by
// asterisks of the same length, for printing.
func maskSecrets(cfg *config.Config) *config.Config {
	mask := func(u config.User) config.User {
		return config.User{Name: u.Name, Secret: strings.Repeat("*", len(u.Secret))}
	}
	maskAll := func(us []config.User) []config.User {
		var out []config.User
		for _, u := range us {
			out = append(out, mask(u))
		}
		return out
	}
	maskOne := func(u *config.User) *config.User {
		if u == nil {
			return nil
		}
		m := mask(*u)
		return &m
	}
	c := *cfg
	c.DiscoveryUsers = maskAll(cfg.DiscoveryUsers)
	c.DiscoveryOutgoingUser = maskOne(cfg.DiscoveryOutgoingUser)
	c.Targets = append([]config.Target(nil), cfg.Targets...)
	for i := range c.Targets {
		t := &c.Targets[i]
		t.IncomingUsers = maskAll(t.IncomingUsers)
		t.OutgoingUser = maskOne(t.OutgoingUser)
	}
	return &c
}

// printBanner tells the user what is served and how to connect to it.
// served is what the banner asks of the running node (an *agent.Single).
type served interface {
	Addrs() []string
	LUNSize(target string, lun uint64) int64
}

func printBanner(w io.Writer, cfg *config.Config, n served, dev bool) {
	var b strings.Builder
	var portals []string // addresses to connect to
	fmt.Fprintf(&b, "hatgt %s is serving\n", version)
	for i, actual := range n.Addrs() {
		configured := actual
		if i < len(cfg.Portals) {
			configured = cfg.Portals[i]
		}
		shown, connect := describePortal(configured, actual)
		fmt.Fprintf(&b, "  portal  %s\n", shown)
		portals = append(portals, connect)
	}
	for _, t := range cfg.Targets {
		fmt.Fprintf(&b, "  target  %s\n", t.Name)
		for _, l := range t.LUNs {
			fmt.Fprintf(&b, "  lun %-4d%s\n", l.Number, describeLUN(l, n.LUNSize(t.Name, l.Number)))
		}
	}
	if len(portals) > 0 && len(cfg.Targets) > 0 {
		p := portals[0]
		t := cfg.Targets[0]
		fmt.Fprintf(&b, "connect with (from another machine, use its address instead of %s):\n", hostOf(p))
		if len(cfg.DiscoveryUsers) > 0 {
			fmt.Fprintf(&b, "  (discovery CHAP: set discovery.sendtargets.auth.* with iscsiadm -m discoverydb -o update first)\n")
		}
		fmt.Fprintf(&b, "  iscsiadm -m discovery -t sendtargets -p %s\n", p)
		cred := ""
		if len(t.IncomingUsers) > 0 {
			// Never print the secret; say where it goes.
			cred = t.IncomingUsers[0].Name + "%SECRET@"
			fmt.Fprintf(&b, "  (CHAP: set node.session.auth.* with iscsiadm -m node -o update before the login)\n")
		}
		fmt.Fprintf(&b, "  iscsiadm -m node -T %s -p %s --login\n", t.Name, p)
		if len(cfg.DiscoveryUsers) > 0 {
			// libiscsi uses the URL's credentials for discovery.
			fmt.Fprintf(&b, "  iscsi-ls iscsi://%s%%SECRET@%s\n", cfg.DiscoveryUsers[0].Name, p)
		} else {
			fmt.Fprintf(&b, "  iscsi-ls -s iscsi://%s%s\n", cred, p)
		}
		if len(t.LUNs) > 0 {
			fmt.Fprintf(&b, "  qemu-img info iscsi://%s%s/%s/%d\n", cred, p, t.Name, t.LUNs[0].Number)
		}
		if dev {
			fmt.Fprintf(&b, "stop with Ctrl-C; the disk is kept in %s\n", t.LUNs[0].Path)
		}
	}
	io.WriteString(w, b.String())
	if f, ok := w.(*os.File); ok {
		f.Sync()
	}
}

// describePortal says what a portal listens on, from the address it was
// configured with and the one its listener reports, and gives the address
// a local client connects to. Go listens on a wildcard IPv4 address
// ("0.0.0.0:3260") with a dual-stack socket where the system has IPv6,
// which reports "[::]:3260" and takes IPv6 connections too: the banner
// says so instead of printing an address nobody configured, and local
// clients are shown the loopback of the family that was asked for.
func describePortal(configured, actual string) (shown, connect string) {
	chost, _, err := net.SplitHostPort(configured)
	ahost, aport, aerr := net.SplitHostPort(actual)
	if err != nil || aerr != nil {
		return actual, connectAddr(actual)
	}
	cip, aip := net.ParseIP(chost), net.ParseIP(ahost)
	wild := chost == "" || cip != nil && cip.IsUnspecified()
	if !wild {
		return actual, connectAddr(actual)
	}
	host := chost
	if host == "" {
		host = "0.0.0.0"
	}
	shown = net.JoinHostPort(host, aport)
	connect = connectAddr(shown)
	switch {
	case aip != nil && aip.To4() == nil: // an IPv6 (dual-stack) socket
		shown += " (every IPv4 and IPv6 address of this machine)"
	case aip != nil:
		shown += " (every IPv4 address of this machine)"
	}
	return shown, connect
}

func describeLUN(l config.LUN, size int64) string {
	mode := map[config.IOMode]string{config.WriteBack: "write-back", config.WriteThrough: "write-through", config.ReadOnly: "read-only"}[l.IOMode]
	s := fmt.Sprintf("%s, %s, %d-byte sectors", agent.FormatBytes(size), mode, l.Sector)
	if l.Thin {
		s += ", thin"
	}
	return fmt.Sprintf("%s (%s %s)", s, l.Type, l.Path)
}
