package test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering checks that dependencies point down, as DESIGN.md and
// STYLE.md require: scsi/ and blockstore/ use only the standard library and
// golang.org/x/sys, scsi/ never sees target/ or blockstore/, config/ is
// standard library only, nothing below cluster/ imports hashicorp, and
// internal/logging (used by the binary and agent) needs only hclog.
func TestLayering(t *testing.T) {
	const mod = "github.com/hatgt/hatgt/"
	tests := []struct {
		pkg     string
		allowed func(dep string) bool
	}{
		{"scsi", func(d string) bool { return strings.HasPrefix(d, "golang.org/x/sys/") }},
		{"blockstore", func(d string) bool { return strings.HasPrefix(d, "golang.org/x/sys/") }},
		{"config", func(d string) bool { return false }},
		{"target", func(d string) bool { return d == mod+"scsi" || strings.HasPrefix(d, "golang.org/x/sys/") }},
		// ALUA state: scsi's types only, no cluster.
		{"alua", func(d string) bool { return d == mod+"scsi" || strings.HasPrefix(d, "golang.org/x/sys/") }},
		// Replication sits under the cluster: never Raft, memberlist or
		// cluster/ itself.
		{"replication", func(d string) bool {
			return !strings.HasPrefix(d, "github.com/hashicorp/") && d != mod+"cluster"
		}},
		// The node runtime sits on top of every layer but the binary.
		{"agent", func(d string) bool {
			switch strings.TrimPrefix(d, mod) {
			// config: through cluster, which names targets by the
			// config file's rule (config.CanonicalName, standard
			// library only).
			case "cluster", "replication", "target", "scsi", "alua", "blockstore", "config", "internal/logging":
				return true
			}
			return !strings.HasPrefix(d, mod)
		}},
		// One log format for the binary and agent: the standard library
		// and hclog (the interface it implements) only.
		{"internal/logging", func(d string) bool {
			return strings.HasPrefix(d, "github.com/hashicorp/go-hclog") || strings.HasPrefix(d, "github.com/fatih/color") ||
				strings.HasPrefix(d, "github.com/mattn/") || strings.HasPrefix(d, "golang.org/x/sys/")
		}},
	}
	for _, tc := range tests {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "../"+tc.pkg).CombinedOutput()
		if err != nil {
			t.Errorf("go list %s: %v\n%s", tc.pkg, err, out)
			continue
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == mod+tc.pkg || strings.HasPrefix(dep, mod+tc.pkg+"/") || tc.allowed(dep) {
				continue
			}
			t.Errorf("%s imports %s, which its layer must not", tc.pkg, dep)
		}
	}
}

// TestAgentImportedOnlyByTheBinary checks that the node runtime is a leaf:
// no package of the module but cmd/hatgt imports package agent (tests may).
func TestAgentImportedOnlyByTheBinary(t *testing.T) {
	const mod = "github.com/hatgt/hatgt/"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		// cmd/hatgt wires it; tests (and the simulator under test/) drive it.
		if len(f) == 0 || f[0] == mod+"cmd/hatgt" || f[0] == mod+"agent" || strings.HasPrefix(f[0], mod+"test/") {
			continue
		}
		for _, imp := range f[1:] {
			if imp == mod+"agent" {
				t.Errorf("%s imports agent: only cmd/hatgt may", f[0])
			}
		}
	}
}
