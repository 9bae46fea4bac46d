package config

import "testing"

func TestCanonicalName(t *testing.T) {
	for in, want := range map[string]string{
		"iqn.2026-11.io.Example:DEMO": "iqn.2026-11.io.example:demo",
		"eui.02004567A425678D":        "eui.02004567a425678d",
	} {
		if got, err := CanonicalName(in); err != nil || got != want {
			t.Errorf("CanonicalName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"iqn.2026-11.io.example:under_score", "iqn.x", "disk1", "iqn.2026-11.io.example:a b"} {
		if _, err := CanonicalName(bad); err == nil {
			t.Errorf("CanonicalName(%q) accepted", bad)
		}
	}
}
