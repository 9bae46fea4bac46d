package main

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hatgt/hatgt/config"
)

// TestMissingFileErrors checks what a LUN whose file cannot be opened
// reports: a missing directory is named as such, even with Size= given.
func TestMissingFileErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		lun     config.LUN
		want    []string
		notWant string
	}{
		{"missing directory", config.LUN{Path: filepath.Join(dir, "srv", "iscsi", "db.img"), Type: config.FileIO, Size: 1 << 20, Sector: 512, IOMode: config.WriteThrough},
			[]string{"directory " + filepath.Join(dir, "srv", "iscsi") + " does not exist", "mkdir -p"}, "give Size="},
		{"missing file without Size", config.LUN{Path: filepath.Join(dir, "db.img"), Type: config.FileIO, Sector: 512, IOMode: config.WriteThrough},
			[]string{"db.img does not exist", "give Size= to create it"}, ""},
		{"read-only never creates", config.LUN{Path: filepath.Join(dir, "ro.img"), Type: config.FileIO, Size: 1 << 20, Sector: 512, IOMode: config.ReadOnly},
			[]string{"ro.img does not exist", "IOMode=ro"}, "give Size="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := &node{log: slog.New(slog.DiscardHandler), sizes: map[lunKey]int64{}}
			_, err := n.openLUN("iqn.2026-11.io.x:y", tc.lun)
			if err == nil {
				n.closeAll()
				t.Fatal("openLUN succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("error %q says %q", err, tc.notWant)
			}
		})
	}
}
