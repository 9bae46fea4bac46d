package config

import (
	"os"
	"strings"
	"testing"
)

// TestDocumentedExamplesParse keeps the examples in README.md and in the
// package documentation valid.
func TestDocumentedExamplesParse(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Skipf("README.md not found: %v", err)
	}
	text := string(readme)
	start := strings.Index(text, "```\n# Global settings come before the first Target line.")
	if start < 0 {
		t.Fatal("README.md has no config example starting with \"# Global settings come before the first Target line.\"")
	}
	body := text[start+len("```\n"):]
	body = body[:strings.Index(body, "```")]
	cfg, err := Parse("README.md", strings.NewReader(body))
	if err != nil {
		t.Fatalf("README example: %v", err)
	}
	if len(cfg.Targets) != 2 || len(cfg.Portals) != 2 || len(cfg.Warnings) != 0 {
		t.Errorf("README example parsed to %d targets, %d portals, warnings %v", len(cfg.Targets), len(cfg.Portals), cfg.Warnings)
	}

	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(l, "//\t") {
			lines = append(lines, strings.TrimPrefix(l, "//\t"))
		}
	}
	if _, err := Parse("doc.go", strings.NewReader(strings.Join(lines, "\n"))); err != nil {
		t.Errorf("package doc example: %v", err)
	}
}

// TestREADMEMigrationExample keeps the worked example of README.md's
// "Migrating from IET" true: it loads with the two warnings it names.
func TestREADMEMigrationExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Skipf("README.md not found: %v", err)
	}
	text := string(readme)
	start := strings.Index(text, "A worked example: this `ietd.conf`\n\n```\n")
	if start < 0 {
		t.Fatal("README.md has no \"A worked example: this `ietd.conf`\" block")
	}
	body := text[start+len("A worked example: this `ietd.conf`\n\n```\n"):]
	body = body[:strings.Index(body, "```")]
	cfg, err := Parse("ietd.conf", strings.NewReader(body))
	if err != nil {
		t.Fatalf("README migration example: %v", err)
	}
	var got []string
	for _, w := range cfg.Warnings {
		got = append(got, w.Error())
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], "ietd.conf:5: Lun 1: Type=nullio") || !strings.HasPrefix(got[1], "ietd.conf:13: Wthreads 8 is IET's and is ignored") {
		t.Errorf("README migration example warnings:\n%s", strings.Join(got, "\n"))
	}
	if l := cfg.Targets[0].LUNs; len(l) != 1 || l[0].ScsiID != "lun1" || l[0].Type != BlockIO {
		t.Errorf("LUNs %+v", l)
	}
}
