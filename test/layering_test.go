package test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering checks that dependencies point down, as DESIGN.md and
// STYLE.md require: scsi/ and blockstore/ use only the standard library and
// golang.org/x/sys, scsi/ never sees target/ or blockstore/, config/ is
// standard library only, and nothing below cluster/ imports hashicorp.
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
