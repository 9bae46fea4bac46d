package main

import (
	"strings"
	"testing"
)

// TestLunCreateFlagChecks: the CLI refuses what it can see is wrong before
// it asks the cluster, saying what to write instead: --size with GB (10^9
// or 2^30?), --replicas 0, no --size. Good flags get as far as the API (here
// a port nobody listens on).
func TestLunCreateFlagChecks(t *testing.T) {
	env := func(k string) string {
		if k == "HATGT_ADDR" {
			return "127.0.0.1:1"
		}
		return ""
	}
	run := func(args string) error {
		return runClusterCommand("lun", strings.Fields(args), strings.NewReader(""), &strings.Builder{}, &strings.Builder{}, env)
	}
	const iqn = "iqn.2026-11.io.example:disks"
	for args, want := range map[string]string{
		"create " + iqn + " --lun 0 --size 1GB":               "write 1G for 1 GiB (1073741824 bytes), or 1000000000 for 1×10^9 bytes",
		"create " + iqn + " --lun 0 --size 10G --replicas 0":  "--replicas 0: want the number of copies",
		"create " + iqn + " --lun 0 --size 10G --replicas=-2": "--replicas -2",
		"create " + iqn + " --lun 0":                          "--size SIZE is required",
	} {
		err := run(args)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("hatgt lun %s: %v, want %q", args, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "cannot reach") {
			t.Errorf("hatgt lun %s asked the cluster: %v", args, err)
		}
	}
	for _, args := range []string{
		"create " + iqn + " --lun 0 --size 10G",
		"create " + iqn + " --lun 0 --size 10GiB --replicas 2",
		"create " + iqn + " --lun 0 --size 10000000000",
	} {
		if err := run(args); err == nil || !strings.Contains(err.Error(), "cannot reach") {
			t.Errorf("hatgt lun %s: %v, want it to reach for the API", args, err)
		}
	}
}
