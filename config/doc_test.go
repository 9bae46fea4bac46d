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
