package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/hatgt/hatgt/agent"
	"github.com/hatgt/hatgt/config"
)

const (
	// devTargetName is the target "hatgt serve --dev" serves.
	devTargetName = "iqn.2026-11.io.hatgt:dev"
	// devLUNSize is the size of the dev LUN's sparse file.
	devLUNSize = 1 << 30
	// defaultDataDir is where --dev keeps its disk unless --data-dir says
	// otherwise: relative to the working directory, so that a first try
	// leaves nothing in unexpected places and is easy to delete.
	defaultDataDir = "hatgt-data"
)

// devConfig is the configuration "hatgt serve --dev" serves, as if read
// from a file. It creates DIR/dev so that an unwritable data directory is
// reported before anything else happens.
func devConfig(dataDir, addr string) (*config.Config, error) {
	dir, err := filepath.Abs(filepath.Join(dataDir, "dev"))
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dataDir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dataDir, unwrapPathError(err))
	}
	probe, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return nil, fmt.Errorf("data dir %s is not writable: %w", dir, unwrapPathError(err))
	}
	probe.Close()
	os.Remove(probe.Name())
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("--iscsi-addr %q: want HOST:PORT, e.g. 127.0.0.1:3260", addr)
	}
	return &config.Config{
		File:    agent.DevConfigName,
		Portals: []string{addr},
		Targets: []config.Target{{
			Name:  devTargetName,
			Alias: "hatgt dev",
			LUNs: []config.LUN{{
				Number: 0,
				Path:   filepath.Join(dir, "lun0.img"),
				Type:   config.FileIO,
				Size:   devLUNSize,
				Sector: 512,
				IOMode: config.WriteBack,
				Thin:   true,
			}},
		}},
	}, nil
}

// unwrapPathError drops the *os.PathError wrapper, whose path the caller
// already prints, leaving "permission denied" and the like.
func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return fmt.Errorf("%s %s: %w", pe.Op, pe.Path, pe.Err)
	}
	return err
}

// connectAddr turns a listening address into one a local client can dial:
// the wildcard addresses become loopback.
func connectAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip := net.ParseIP(host)
	switch {
	case host == "" || ip != nil && ip.IsUnspecified() && ip.To4() != nil:
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
