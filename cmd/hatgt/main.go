package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `hatgt is an iSCSI target, becoming a clustered, highly available one.

Usage:
  hatgt serve --dev [--data-dir DIR] [--iscsi-addr HOST:PORT]
  hatgt serve --config FILE
  hatgt serve --node-id ID --bind IP [--bootstrap | --join PEER-IP:PORT]
  hatgt dev --nodes N
  hatgt version
  hatgt help [COMMAND]

Commands:
  serve     run an iSCSI target node (see "hatgt help serve"), or with
            --node-id and --bind a cluster node ("hatgt serve --bind IP --help")
  dev       run a local cluster of N nodes on 127.0.0.11, .12, ...
  version   print the version
  help      print this help, or a command's

Cluster commands (they talk to a cluster node's admin API): status,
target, lun, acl, chap, join, leave, node. See "hatgt help status".
`

const versionUsage = `Usage:
  hatgt version      (or: hatgt --version)

prints the version of this binary, the Go version and platform it was
built with, and the commit it was built from when it was built from a git
checkout.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the process exit status: 0 on
// success, 1 when the command failed, 2 for a usage error, 3 when status
// shows a problem.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch name, rest := args[0], args[1:]; name {
	case "serve":
		return serveCommand(rest, stdout, stderr)
	case "dev":
		return devClusterCommand(rest, stdout, stderr)
	case "version", "--version":
		if len(rest) > 0 && isHelp(rest[0]) {
			fmt.Fprint(stdout, versionUsage)
			return 0
		}
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			fmt.Fprint(stdout, usage)
			return 0
		}
		switch rest[0] {
		case "serve":
			return serveCommand([]string{"--help"}, stdout, stderr)
		case "dev":
			return devClusterCommand([]string{"--help"}, stdout, stderr)
		case "version", "--version":
			fmt.Fprint(stdout, versionUsage)
			return 0
		case "help":
			fmt.Fprint(stdout, usage)
			return 0
		}
		if ok, err := clusterCommand(rest[0], []string{"--help"}); ok {
			return exitStatus(err, stderr)
		}
		fmt.Fprintf(stderr, "hatgt: no help for unknown command %q (commands: serve, dev, version, help, status, target, lun, acl, chap, join, leave, node)\n", rest[0])
		return 2
	default:
		if ok, err := clusterCommand(name, rest); ok {
			return exitStatus(err, stderr)
		}
		fmt.Fprintf(stderr, "hatgt: unknown command %q (run \"hatgt help\")\n", name)
		return 2
	}
}

// errStatusProblems is status's answer when what it printed shows a
// problem: exit status 3, nothing more on stderr (the output says it), so
// a monitoring script can tell a sick cluster (3) from an unreachable
// node or a bad command line (1, 2).
var errStatusProblems = errors.New("the cluster has problems")

const exitProblems = 3

func exitStatus(err error, stderr io.Writer) int {
	if errors.Is(err, errStatusProblems) {
		return exitProblems
	}
	if err != nil {
		fmt.Fprintln(stderr, "hatgt:", err)
		return 1
	}
	return 0
}

func versionString() string {
	s := fmt.Sprintf("hatgt %s (%s %s/%s", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" && len(kv.Value) >= 12 {
				s += ", commit " + kv.Value[:12]
			}
		}
	}
	return s + ")"
}
