package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hatgt/hatgt/cluster"
)

// defaultAPIAddr is the admin API address when HATGT_ADDR is not set.
const defaultAPIAddr = "127.0.0.1:3270"

const clusterUsage = `Cluster commands talk to a node's admin API: HATGT_ADDR (host:port, or
unix:/DATA/hatgt.sock; default 127.0.0.1:3270) picks the node, HATGT_TOKEN
or --token-file gives the admin token that changes need.

  hatgt status [--json]        exit 0 when healthy, 3 when it shows a problem (no
                               leader, a LUN no node serves, a failed copy)
  hatgt target create IQN [--alias A] | delete IQN | list
  hatgt lun create IQN --lun N --size SIZE [--sector 512|4096] [--io-mode wb|wt|ro]
                       [--type fileio|blockio] [--path P] [--replicas N]
                       [--placement NODE,NODE,...]
  hatgt lun delete IQN --lun N | list [IQN]
  hatgt lun verify IQN --lun N [--repair]
                       compare every copy with the owner's (exit 1 if any differs);
                       --repair rewrites divergent regions from the owner's copy
  hatgt acl add IQN INITIATOR | remove IQN INITIATOR | list IQN
  hatgt chap set IQN --user U [--secret-file F] [--mutual-user U --mutual-secret-file F]
                 (without --secret-file the secret is read from standard input)
  hatgt chap clear IQN
  hatgt join PEER-API-ADDR     make the node join the cluster of PEER
  hatgt leave [--force]        make the node leave its cluster and stop: it hands
                               the LUNs it owns to in-sync copies first, and fails
                               on a LUN without one (--force: leave it ownerless)
  hatgt node remove ID         remove a dead node from the cluster (waits until
                               the owner lease of a node that owns LUNs ran out)

Common flags: --addr ADDR (overrides HATGT_ADDR), --token-file FILE,
--timeout DURATION (default 30s).
`

// clusterCommand runs a cluster management subcommand (join, leave,
// status, node, target, lun, acl, chap). handled is false when name is not
// one of them.
func clusterCommand(name string, args []string) (handled bool, err error) {
	switch name {
	case "status", "target", "lun", "acl", "chap", "join", "leave", "node":
	default:
		return false, nil
	}
	return true, runClusterCommand(name, args, os.Stdin, os.Stdout, os.Stderr, os.Getenv)
}

// clusterCLI is one invocation's connection settings and output.
type clusterCLI struct {
	addr      string
	tokenFile string
	token     string // as client() found it
	timeout   time.Duration
	getenv    func(string) string
	stdin     io.Reader
	out       io.Writer
	// errOut shows the progress of long commands (lun verify), so that
	// out holds the result only.
	errOut io.Writer
}

func runClusterCommand(name string, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	c := &clusterCLI{getenv: getenv, stdin: stdin, out: stdout, errOut: stderr}
	sub := ""
	switch name {
	case "target", "lun", "acl", "chap", "node":
		if len(args) == 0 || strings.HasPrefix(args[0], "-") {
			if len(args) > 0 && isHelp(args[0]) {
				fmt.Fprint(stdout, clusterUsage)
				return nil
			}
			return fmt.Errorf("%s: missing subcommand (run \"hatgt help %s\")", name, name)
		}
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("hatgt "+strings.TrimSpace(name+" "+sub), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.addr, "addr", "", "admin API address (default $HATGT_ADDR or "+defaultAPIAddr+")")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the admin token (default $HATGT_TOKEN)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the cluster")
	run, err := c.command(fs, name, sub)
	if err != nil {
		return err
	}
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, clusterUsage)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %v", fs.Name(), err)
	}
	cl, _, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.explain(run(ctx, cl, pos))
}

// explain adds to a failure without an answer what to check: the address
// (for a node that could not be reached) or the time allowed (for one that
// took the request and did not answer in time).
func (c *clusterCLI) explain(err error) error {
	var te *cluster.TransportError
	switch {
	case !errors.As(err, &te):
		return err
	case te.Sent && te.Timeout():
		return fmt.Errorf("the node at %s took %s %s but did not answer within --timeout %s (the change may still be applied: check with hatgt status)", te.Addr, te.Method, te.Path, c.timeout)
	case te.Sent:
		return fmt.Errorf("the node at %s took %s %s but the connection ended without an answer: %v (check with hatgt status)", te.Addr, te.Method, te.Path, te.Err)
	}
	return fmt.Errorf("cannot reach the hatgt admin API at %s: %v (is the node up? set HATGT_ADDR or --addr to a node's IP:3270)", te.Addr, te.Err)
}

func isHelp(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

// parseInterspersed parses flags that may come after positional arguments
// ("lun create IQN --lun 0") and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (c *clusterCLI) client() (*cluster.Client, string, error) {
	addr := c.addr
	if addr == "" {
		addr = c.getenv("HATGT_ADDR")
	}
	if addr == "" {
		addr = defaultAPIAddr
	}
	token := c.getenv("HATGT_TOKEN")
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, "", fmt.Errorf("token file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return nil, "", fmt.Errorf("token file %s is empty", c.tokenFile)
		}
	}
	c.token = token
	return cluster.NewClient(addr, token, nil), addr, nil
}

type clusterRun func(ctx context.Context, cl *cluster.Client, args []string) error

// command declares the flags of one subcommand on fs and returns its body.
func (c *clusterCLI) command(fs *flag.FlagSet, name, sub string) (clusterRun, error) {
	nargs := func(n int, usage string, f clusterRun) clusterRun {
		return func(ctx context.Context, cl *cluster.Client, args []string) error {
			if len(args) != n {
				return fmt.Errorf("usage: hatgt %s", usage)
			}
			return f(ctx, cl, args)
		}
	}
	switch name + " " + sub {
	case "status ":
		asJSON := fs.Bool("json", false, "print JSON")
		return nargs(0, "status [--json]", func(ctx context.Context, cl *cluster.Client, _ []string) error {
			s, err := cl.Status(ctx)
			if err != nil {
				return err
			}
			if *asJSON {
				err = c.printJSON(s)
			} else {
				err = cluster.WriteStatusTable(c.out, s)
			}
			if err == nil && (s.Problem != "" || len(s.Problems) > 0) {
				err = errStatusProblems
			}
			return err
		}), nil
	case "join ":
		return nargs(1, "join PEER-API-ADDR", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if err := c.join(ctx, cl, a[0]); err != nil {
				return err
			}
			c.done("%s joined the cluster of %s", c.nodeName(cl), a[0])
			return nil
		}), nil
	case "leave ":
		force := fs.Bool("force", false, "leave although a LUN owned here has no other in-sync copy: it is left without an owner")
		return nargs(0, "leave [--force]", func(ctx context.Context, cl *cluster.Client, _ []string) error {
			name := c.nodeName(cl)
			if err := cl.Leave(ctx, cluster.LeaveOptions{Force: *force}); err != nil {
				return err
			}
			c.done("%s left the cluster (after handing its LUNs over) and is stopping", name)
			return nil
		}), nil
	case "node remove":
		return nargs(1, "node remove ID", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if err := c.removeNode(ctx, cl, a[0]); err != nil {
				return err
			}
			c.done("removed node %s from the cluster (its LUNs moved to in-sync copies, its copies were dropped)", a[0])
			return nil
		}), nil
	case "target create":
		alias := fs.String("alias", "", "target alias")
		return nargs(1, "target create IQN [--alias A]", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if err := cl.CreateTarget(ctx, a[0], *alias); err != nil {
				return err
			}
			c.done("created target %s (no LUNs yet: hatgt lun create %s --lun 0 --size SIZE)", a[0], a[0])
			return nil
		}), nil
	case "target delete":
		return nargs(1, "target delete IQN", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if err := cl.DeleteTarget(ctx, a[0]); err != nil {
				return err
			}
			c.done("deleted target %s", a[0])
			return nil
		}), nil
	case "target list":
		return nargs(0, "target list", func(ctx context.Context, cl *cluster.Client, _ []string) error {
			s, err := cl.Status(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TARGET\tALIAS\tLUNS\tACL\tCHAP")
			for _, t := range s.Targets {
				chap := "-"
				if t.CHAP != nil {
					chap = t.CHAP.User
					if t.CHAP.MutualUser != "" {
						chap += " (mutual)"
					}
				}
				acl := "any"
				if len(t.ACL) > 0 {
					acl = strconv.Itoa(len(t.ACL)) + " initiators"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", t.IQN, orDash(t.Alias), len(t.LUNs), acl, chap)
			}
			return tw.Flush()
		}), nil
	case "lun create":
		q := cluster.LUNRequest{}
		lun := fs.Int64("lun", -1, "LUN number")
		size := fs.String("size", "", "size: bytes, or with K, M, G, T or P (powers of 1024; GB, TB, ... are refused)")
		sector := fs.Uint("sector", 512, "sector size: 512 or 4096")
		fs.StringVar(&q.IOMode, "io-mode", "wb", "IO mode: wb, wt or ro")
		fs.StringVar(&q.Backing, "type", "fileio", "backing type: fileio or blockio")
		fs.StringVar(&q.Path, "path", "", "backing file or device (default: a file in the data dir)")
		fs.IntVar(&q.Replicas, "replicas", 0, "number of copies (default 1, or the number of --placement nodes)")
		placement := fs.String("placement", "", "comma-separated node IDs holding the copies, the owner first (default: the leader chooses)")
		return nargs(1, "lun create IQN --lun N --size SIZE [...]", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if *placement != "" {
				for _, id := range strings.Split(*placement, ",") {
					if id = strings.TrimSpace(id); id != "" {
						q.Placement = append(q.Placement, id)
					}
				}
				if q.Replicas != 0 && q.Replicas != len(q.Placement) {
					return fmt.Errorf("lun create: --replicas %d but --placement names %d nodes", q.Replicas, len(q.Placement))
				}
			}
			if *lun < 0 {
				return errors.New("lun create: --lun N is required")
			}
			replicasSet := false
			fs.Visit(func(f *flag.Flag) { replicasSet = replicasSet || f.Name == "replicas" })
			if replicasSet && q.Replicas < 1 {
				return fmt.Errorf("lun create: --replicas %d: want the number of copies, 1 up to the number of nodes (e.g. --replicas 2); leave it out for 1", q.Replicas)
			}
			if *size == "" {
				return errors.New("lun create: --size SIZE is required, e.g. --size 10G (K/M/G/T/P are powers of 1024)")
			}
			n, err := cluster.ParseSize(*size)
			if err != nil {
				return fmt.Errorf("lun create: --size: %v", err)
			}
			if *sector > 1<<16 {
				return fmt.Errorf("lun create: bad --sector %d", *sector)
			}
			q.LUN, q.Size, q.SectorSize = uint64(*lun), n, uint32(*sector)
			if err := cl.CreateLUN(ctx, a[0], q); err != nil {
				return err
			}
			c.lunCreated(ctx, cl, a[0], q.LUN)
			return nil
		}), nil
	case "lun verify":
		lun := fs.Int64("lun", -1, "LUN number")
		repair := fs.Bool("repair", false, "rewrite the regions of in-sync copies that differ from the owner's")
		_ = fs.Set("timeout", "24h") // reading a large LUN takes long
		return nargs(1, "lun verify IQN --lun N [--repair]", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if *lun < 0 {
				return errors.New("lun verify: --lun N is required")
			}
			return c.verifyLUN(ctx, cl, a[0], uint64(*lun), *repair)
		}), nil
	case "lun delete":
		lun := fs.Int64("lun", -1, "LUN number")
		return func(ctx context.Context, cl *cluster.Client, a []string) error {
			if len(a) == 2 && *lun < 0 { // also "lun delete IQN N"
				n, err := strconv.ParseInt(a[1], 10, 64)
				if err != nil {
					return fmt.Errorf("lun delete: bad LUN number %q", a[1])
				}
				*lun, a = n, a[:1]
			}
			if len(a) != 1 || *lun < 0 {
				return errors.New("usage: hatgt lun delete IQN --lun N")
			}
			if err := cl.DeleteLUN(ctx, a[0], uint64(*lun)); err != nil {
				return err
			}
			c.done("deleted LUN %d of %s (its backing files stay on the nodes)", *lun, a[0])
			return nil
		}, nil
	case "lun list":
		return func(ctx context.Context, cl *cluster.Client, a []string) error {
			if len(a) > 1 {
				return errors.New("usage: hatgt lun list [IQN]")
			}
			s, err := cl.Status(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TARGET\tLUN\tSIZE\tSECTOR\tIO\tTYPE\tREPLICAS\tOWNER\tPLACEMENT\tIN SYNC\tEPOCH")
			found := len(a) == 0
			for _, t := range s.Targets {
				if len(a) == 1 && t.IQN != a[0] {
					continue
				}
				found = true
				for _, l := range t.LUNs {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%d\n", t.IQN, l.LUN.LUN, cluster.FormatSize(l.Size),
						l.SectorSize, l.IOMode, l.Backing, l.Replicas, orDash(l.Owner), strings.Join(l.Placement, ","),
						strings.Join(l.InSync, ","), l.Epoch)
				}
			}
			if !found {
				return fmt.Errorf("no target %s", a[0])
			}
			return tw.Flush()
		}, nil
	case "acl add":
		return nargs(2, "acl add IQN INITIATOR", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if err := cl.AddACL(ctx, a[0], a[1]); err != nil {
				return err
			}
			c.done("added %s to the ACL of %s: only initiators in the ACL may log in to it", a[1], a[0])
			return nil
		}), nil
	case "acl remove":
		return nargs(2, "acl remove IQN INITIATOR", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if err := cl.RemoveACL(ctx, a[0], a[1]); err != nil {
				return err
			}
			c.done("removed %s from the ACL of %s (sessions already logged in carry on; an empty ACL lets any initiator in)", a[1], a[0])
			return nil
		}), nil
	case "acl list":
		return nargs(1, "acl list IQN", func(ctx context.Context, cl *cluster.Client, a []string) error {
			s, err := cl.Status(ctx)
			if err != nil {
				return err
			}
			for _, t := range s.Targets {
				if t.IQN == a[0] {
					if len(t.ACL) == 0 {
						fmt.Fprintln(c.out, "(empty: any initiator may log in)")
					}
					for _, i := range t.ACL {
						fmt.Fprintln(c.out, i)
					}
					return nil
				}
			}
			return fmt.Errorf("no target %s", a[0])
		}), nil
	case "chap set":
		user := fs.String("user", "", "CHAP user name (the initiator's)")
		secretFile := fs.String("secret-file", "", "file holding the CHAP secret (default: read standard input)")
		mutualUser := fs.String("mutual-user", "", "mutual CHAP user name (the target's)")
		mutualFile := fs.String("mutual-secret-file", "", "file holding the mutual CHAP secret")
		return nargs(1, "chap set IQN --user U [--secret-file F]", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if *user == "" {
				return errors.New("chap set: --user is required")
			}
			ch := cluster.CHAP{User: *user, MutualUser: *mutualUser}
			var err error
			if *secretFile != "" {
				ch.Secret, err = readSecretFile(*secretFile)
			} else {
				if f, ok := c.stdin.(*os.File); ok {
					if fi, e := f.Stat(); e == nil && fi.Mode()&os.ModeCharDevice != 0 {
						fmt.Fprint(os.Stderr, "CHAP secret (12-255 bytes; it will echo): ")
					}
				}
				ch.Secret, err = readSecretLine(c.stdin)
			}
			if err != nil {
				return fmt.Errorf("chap set: %w", err)
			}
			if *mutualUser != "" {
				if *mutualFile == "" {
					return errors.New("chap set: --mutual-user needs --mutual-secret-file")
				}
				if ch.MutualSecret, err = readSecretFile(*mutualFile); err != nil {
					return fmt.Errorf("chap set: %w", err)
				}
			}
			if err := cl.SetCHAP(ctx, a[0], ch); err != nil {
				return err
			}
			if ch.MutualUser != "" {
				c.done("set CHAP on %s: initiators log in as %s, and the target answers as %s (mutual CHAP)", a[0], ch.User, ch.MutualUser)
			} else {
				c.done("set CHAP on %s: initiators log in as %s", a[0], ch.User)
			}
			return nil
		}), nil
	case "chap clear":
		return nargs(1, "chap clear IQN", func(ctx context.Context, cl *cluster.Client, a []string) error {
			if err := cl.ClearCHAP(ctx, a[0]); err != nil {
				return err
			}
			c.done("cleared CHAP on %s: logins need no authentication", a[0])
			return nil
		}), nil
	}
	return nil, fmt.Errorf("unknown command %q (run \"hatgt help %s\")", strings.TrimSpace(name+" "+sub), name)
}

func (c *clusterCLI) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// readSecretFile reads a secret (its first line) from a file. Errors never
// include the file's content.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	return readSecretLine(f)
}

func readSecretLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read secret: %w", err)
	}
	s := strings.TrimRight(line, "\r\n")
	if s == "" {
		return "", errors.New("empty secret")
	}
	return s, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
