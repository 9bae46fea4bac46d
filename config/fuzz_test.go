package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// stripLines returns a copy of c without what depends on the text layout:
// file name, line numbers and warnings.
func stripLines(c *Config) Config {
	out := Config{Portals: c.Portals, DiscoveryUsers: c.DiscoveryUsers, DiscoveryOutgoingUser: c.DiscoveryOutgoingUser,
		InitiatorsAllowFile: c.InitiatorsAllowFile, InitiatorsDenyFile: c.InitiatorsDenyFile}
	for _, t := range c.Targets {
		t.Line = 0
		luns := make([]LUN, len(t.LUNs))
		for i, l := range t.LUNs {
			l.Line = 0
			luns[i] = l
		}
		t.LUNs = luns
		out.Targets = append(out.Targets, t)
	}
	return out
}

// FuzzParse checks that Parse never panics and that what it accepts keeps
// the invariants the package documents.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,Size=1G\n",
		"Portal [::]:3260\nTarget eui.0123456789abcdef\nLun 3 Path=/dev/sdb,Type=blockio,IOMode=ro\nIncomingUser u 0123456789ab\nOutgoingUser t 0123456789abc\n",
		"Target naa.0123456789abcdef\nlun 1 path=/x,sector=4096,size=1M,thin=no,scsisn=X\nInitiatorAllow iqn.2026-11.a:b,iqn.2026-11.a:c\n",
		"Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,Sise=10G\n#c\n  Alias x y z\n",
		"Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,Size=99999999999999P\n",
		"IncomingUser joe 0123456789ab\nOutgoingUser jack 0123456789abc\nInitiatorsAllowFile /etc/iet/initiators.allow\niSNSServer 192.0.2.1\n" +
			"Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,ScsiId=xyz,ScsiSN=xyz\nLun 1 Sectors=1000,Type=nullio\n" +
			"MaxConnections 1\nInitialR2T Yes\nImmediateData No\nMaxBurstLength 0x40000\nFirstBurstLength 65536\n" +
			"HeaderDigest None,CRC32C\nDataDigest CRC32C\nErrorRecoveryLevel 1\nWthreads 8\nMaxSessions 0\nMaxSessions 0\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		cfg, err := Parse("f.conf", strings.NewReader(text))
		if err != nil {
			if cfg != nil {
				t.Fatal("config and error both returned")
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %v is not a non-empty ErrorList", err)
			}
			return
		}
		if len(cfg.Targets) == 0 || len(cfg.Portals) == 0 {
			t.Fatalf("accepted config without targets or portals: %+v", cfg)
		}
		// Format writes what Parse reads back.
		again, err := Parse("formatted.conf", strings.NewReader(cfg.Format()))
		if err != nil {
			t.Fatalf("formatted config does not parse: %v\n%s", err, cfg.Format())
		}
		if a, b := stripLines(cfg), stripLines(again); !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", a, b)
		}
		names := map[string]bool{}
		paths := map[string]bool{}
		for _, tg := range cfg.Targets {
			if CheckName(tg.Name) != nil || tg.Name != strings.ToLower(tg.Name) || names[tg.Name] {
				t.Fatalf("bad or duplicate target name %q", tg.Name)
			}
			names[tg.Name] = true
			for _, u := range tg.IncomingUsers {
				if len(u.Secret) < MinSecretLen {
					t.Fatalf("short secret accepted")
				}
			}
			luns := map[uint64]bool{}
			for _, l := range tg.LUNs {
				if luns[l.Number] || l.Number > MaxLUN {
					t.Fatalf("bad or duplicate LUN %d", l.Number)
				}
				luns[l.Number] = true
				if l.Path == "" || paths[l.Path] {
					t.Fatalf("empty or duplicate path %q", l.Path)
				}
				paths[l.Path] = true
				if (l.Sector != 512 && l.Sector != 4096) || l.Size < 0 || l.Size%int64(l.Sector) != 0 {
					t.Fatalf("bad geometry %+v", l)
				}
				if l.Type != FileIO && l.Type != BlockIO || l.IOMode != WriteBack && l.IOMode != WriteThrough && l.IOMode != ReadOnly {
					t.Fatalf("bad type or mode %+v", l)
				}
			}
		}
	})
}
