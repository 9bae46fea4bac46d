package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func parse(t *testing.T, text string) (*Config, error) {
	t.Helper()
	return Parse("hatgt.conf", strings.NewReader(text))
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		text string
		want *Config
	}{
		{
			name: "minimal",
			text: "Target iqn.2026-11.io.example:d1\n  Lun 0 Path=/srv/d1.img,Size=1G\n",
			want: &Config{File: "hatgt.conf", Portals: []string{DefaultPortal}, Targets: []Target{{
				Line: 1, Name: "iqn.2026-11.io.example:d1",
				LUNs: []LUN{{Line: 2, Number: 0, Path: "/srv/d1.img", Type: FileIO, Size: 1 << 30, Sector: 512, IOMode: WriteThrough, Thin: true}},
			}}},
		},
		{
			name: "everything",
			text: `# hatgt node
Portal 0.0.0.0:3260
Portal [::1]:3261   # loopback v6

Target IQN.2026-11.io.Example:Disk1
    Alias  my first disk
    Lun 0 Path=/srv/a.img,Type=fileio,Size=10G,Sector=4096,IOMode=wb,Thin=no,ScsiSN=abc-123
    lun 7 path=/dev/sdb, type=BlockIO, iomode=RO
    InitiatorAllow iqn.1993-08.org.debian:01:host1,eui.0123456789ABCDEF
    InitiatorAllow naa.0123456789abcdef0123456789abcdef
    IncomingUser alice secret#12345678
    OutgoingUser tgt other-secret-16

Target eui.0011223344556677
    Lun 1 Path=/srv/b.img,BlockSize=512
`,
			want: &Config{File: "hatgt.conf", Portals: []string{"0.0.0.0:3260", "[::1]:3261"}, Targets: []Target{
				{
					Line: 5, Name: "iqn.2026-11.io.example:disk1", Alias: "my first disk",
					InitiatorAllow: []string{"iqn.1993-08.org.debian:01:host1", "eui.0123456789abcdef", "naa.0123456789abcdef0123456789abcdef"},
					IncomingUsers:  []User{{Name: "alice", Secret: "secret#12345678"}},
					OutgoingUser:   &User{Name: "tgt", Secret: "other-secret-16"},
					LUNs: []LUN{
						{Line: 7, Number: 0, Path: "/srv/a.img", Type: FileIO, Size: 10 << 30, Sector: 4096, IOMode: WriteBack, Thin: false, SerialNumber: "abc-123"},
						{Line: 8, Number: 7, Path: "/dev/sdb", Type: BlockIO, Sector: 512, IOMode: ReadOnly, Thin: false},
					},
				},
				{
					Line: 14, Name: "eui.0011223344556677",
					LUNs: []LUN{{Line: 15, Number: 1, Path: "/srv/b.img", Type: FileIO, Sector: 512, IOMode: WriteThrough, Thin: true}},
				},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(t, tc.text)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(got.Warnings) != 0 {
				t.Errorf("unexpected warnings: %v", got.Warnings)
			}
			got.Warnings = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const tgt = "Target iqn.2026-11.io.example:d1\n"
	tests := []struct {
		name string
		text string
		line int
		msg  string // substring of the first error
	}{
		{"typo in lun key", tgt + "Lun 0 Path=/a,Sise=10G\n", 2, `unknown key "Sise" (did you mean "Size"?)`},
		{"typo in directive", tgt + "Lun 0 Path=/a\nInitatorAllow iqn.2026-11.io.x\n", 3, `did you mean "InitiatorAllow"?`},
		{"unknown global", "Portall 0.0.0.0:3260\n", 1, `did you mean "Portal"?`},
		{"target key before target", "Lun 0 Path=/a\n", 1, "must be inside a Target block"},
		{"portal in target", tgt + "Portal 0.0.0.0:3260\n", 2, "global setting"},
		{"bad portal", "Portal 0.0.0.0\n" + tgt, 1, "HOST:PORT"},
		{"bad port", "Portal 0.0.0.0:99999\n" + tgt, 1, "port must be"},
		{"duplicate portal", "Portal :3260\nPortal :3260\n" + tgt, 2, "duplicate Portal"},
		{"overlapping portals", "Portal 0.0.0.0:3260\nPortal [::]:3260\n" + tgt, 2, "overlaps Portal 0.0.0.0:3260"},
		{"wildcard and specific", "Portal 127.0.0.1:3260\nPortal 0.0.0.0:3260\n" + tgt, 2, "overlaps"},
		{"bad size", tgt + "Lun 0 Path=/a,Size=10Q\n", 2, "Size=10Q"},
		{"zero size", tgt + "Lun 0 Path=/a,Size=0\n", 2, "more than 0"},
		{"size overflow", tgt + "Lun 0 Path=/a,Size=9999999999P\n", 2, "too large"},
		{"size not multiple", tgt + "Lun 0 Path=/a,Size=1000,Sector=512\n", 2, "not a multiple of Sector=512"},
		{"bad sector", tgt + "Lun 0 Path=/a,Sector=1024\n", 2, "want 512 or 4096"},
		{"bad iomode", tgt + "Lun 0 Path=/a,IOMode=rw\n", 2, "IOMode=rw"},
		{"bad type", tgt + "Lun 0 Path=/a,Type=file\n", 2, `did you mean "fileio"?`},
		{"bad thin", tgt + "Lun 0 Path=/a,Thin=maybe\n", 2, "Thin=maybe"},
		{"relative path", tgt + "Lun 0 Path=disk.img\n", 2, "absolute"},
		{"missing path blockio", tgt + "Lun 0 Type=blockio\n", 2, "has no Path (Type=blockio needs Path=/the/device)"},
		{"missing path fileio", tgt + "Lun 0 Size=1G\n", 2, "has no Path"},
		{"size with blockio", tgt + "Lun 0 Path=/dev/sdb,Type=blockio,Size=1G\n", 2, "not allowed with Type=blockio"},
		{"key twice", tgt + "Lun 0 Path=/a,Size=1G,size=2G\n", 2, "Size given twice"},
		{"key without value", tgt + "Lun 0 Path=/a,Size\n", 2, "Size needs a value"},
		{"duplicate lun", tgt + "Lun 0 Path=/a\nLun 0 Path=/b\n", 3, "duplicate Lun 0"},
		{"lun out of range", tgt + "Lun 16384 Path=/a\n", 2, "want 0 to 16383"},
		{"lun not a number", tgt + "Lun x Path=/a\n", 2, "Lun number"},
		{"lun without params", tgt + "Lun 0\n", 2, "Lun takes a number and parameters"},
		{"duplicate path", tgt + "Lun 0 Path=/a\nLun 1 Path=/a/\n", 3, "already used by the Lun on line 2"},
		{"duplicate target", tgt + "Lun 0 Path=/a\n" + "Target IQN.2026-11.io.example:D1\nLun 0 Path=/b\n", 3, "duplicate Target"},
		{"target without name", "Target\n", 1, "Target takes one iSCSI name"},
		{"iqn without date", "Target iqn.io.example:d1\n", 1, "iqn.YYYY-MM"},
		{"iqn bad month", "Target iqn.2026-13.io.example:d1\n", 1, "bad date"},
		{"iqn no authority", "Target iqn.2026-11.:d1\n", 1, "missing naming authority"},
		{"iqn bad label", "Target iqn.2026-11.io..example\n", 1, "bad domain label"},
		{"iqn bad char", "Target iqn.2026-11.io.example:d_1\n", 1, "not allowed in an iSCSI name"},
		{"eui short", "Target eui.0123\n", 1, "16 hex digits"},
		{"naa bad hex", "Target naa.0123456789abcdeg\n", 1, "16 or 32 hex"},
		{"unknown form", "Target disk1\n", 1, "starts with iqn., eui. or naa."},
		{"name too long", "Target iqn.2026-11.io.example:" + strings.Repeat("x", 201) + "\n", 1, "longer than 223"},
		{"bad initiator", tgt + "Lun 0 Path=/a\nInitiatorAllow host1\n", 3, `InitiatorAllow "host1"`},
		{"initiator ALL", tgt + "Lun 0 Path=/a\nInitiatorAllow ALL\n", 3, "not needed"},
		{"duplicate initiator", tgt + "Lun 0 Path=/a\nInitiatorAllow iqn.2026-11.io.x iqn.2026-11.io.X\n", 3, "already allowed"},
		{"short secret", tgt + "Lun 0 Path=/a\nIncomingUser alice short\n", 3, "secret is 5 bytes; use 12 to 16"},
		{"user without secret", tgt + "Lun 0 Path=/a\nIncomingUser alice\n", 3, "takes a user name and a secret"},
		{"same incoming user twice", tgt + "Lun 0 Path=/a\nIncomingUser a 123456789012\nIncomingUser a 123456789013\n", 4, "IncomingUser a is already defined on line 3"},
		{"two outgoing users", tgt + "Lun 0 Path=/a\nIncomingUser a 123456789012\nOutgoingUser b 123456789013\nOutgoingUser c 123456789014\n", 5, "second OutgoingUser"},
		{"outgoing only", tgt + "Lun 0 Path=/a\nOutgoingUser a 123456789012\n", 1, "needs an IncomingUser"},
		{"same secrets", tgt + "Lun 0 Path=/a\nIncomingUser a 123456789012\nOutgoingUser b 123456789012\n", 1, "different secrets"},
		{"second alias", tgt + "Alias a\nAlias b\n", 3, "second Alias"},
		{"alias without value", tgt + "Alias\n", 2, "Alias needs a value"},
		{"no target", "# nothing\nPortal 0.0.0.0:3260\n", 0, "no Target defined"},
		{"nul byte", tgt + "Lun 0 Path=/a\x00\n", 2, "NUL"},
		{"bad serial", tgt + "Lun 0 Path=/a,ScsiSN=a/b\n", 2, "ScsiSN=a/b"},
		{"long line", tgt + "Alias " + strings.Repeat("x", 70000) + "\n", 2, "longer than 64 KiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(t, tc.text)
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error %q", cfg, tc.msg)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config with an error")
			}
			var first *Error
			if !errors.As(err, &first) {
				t.Fatalf("error %T %v is not a *config.Error", err, err)
			}
			if first.Line != tc.line || !strings.Contains(first.Msg, tc.msg) {
				t.Errorf("got %v\nwant line %d with %q", err, tc.line, tc.msg)
			}
			if first.File != "hatgt.conf" {
				t.Errorf("file = %q", first.File)
			}
			if tc.line > 0 && !strings.HasPrefix(err.Error(), "hatgt.conf:"+itoa(tc.line)+": ") {
				t.Errorf("message %q does not start with file:line", err.Error())
			}
		})
	}
}

func itoa(n int) string { return FormatSize(int64(n)) }

func TestParseReportsEveryError(t *testing.T) {
	text := "Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,Sise=1G\nLun 1 Path=/b,Sector=7\nBogus x\n"
	_, err := parse(t, text)
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %v is not an ErrorList", err)
	}
	var lines []int
	for _, e := range list {
		lines = append(lines, e.Line)
	}
	if !reflect.DeepEqual(lines, []int{2, 3, 4}) {
		t.Errorf("error lines = %v, want [2 3 4]; errors:\n%v", lines, err)
	}
}

func TestParseWarnings(t *testing.T) {
	tests := []struct {
		name string
		text string
		line int
		msg  string
	}{
		{"long secret", "Target iqn.2026-11.io.example:d1\nLun 0 Path=/a\nIncomingUser a 12345678901234567\n", 3, "some initiators"},
		{"no lun", "Target iqn.2026-11.io.example:d1\n", 1, "has no Lun"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parse(t, tc.text)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(cfg.Warnings) != 1 || cfg.Warnings[0].Line != tc.line || !strings.Contains(cfg.Warnings[0].Msg, tc.msg) {
				t.Errorf("warnings = %v, want one on line %d with %q", cfg.Warnings, tc.line, tc.msg)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"512": 512, "1K": 1024, "1k": 1024, "512M": 512 << 20, "10G": 10 << 30, "10GB": 10 << 30,
		"1TiB": 1 << 40, "2P": 2 << 50, "4096B": 4096, "8191P": 8191 << 50,
	}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
		if back, err := ParseSize(FormatSize(got)); err != nil || back != got {
			t.Errorf("ParseSize(FormatSize(%d)=%q) = %d, %v", got, FormatSize(got), back, err)
		}
	}
	for _, in := range []string{"", "G", "iB", "GiB", "1.5G", "-1", "+1", "10Q", "0", "0G", "8192P", "99999999999999999999", "1 G", "1iB"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", in, got)
		}
	}
}

func TestParseFileNamesBase(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.conf")
	if err := os.WriteFile(path, []byte("Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,Sise=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	if err == nil || !strings.HasPrefix(err.Error(), "node.conf:2: ") {
		t.Errorf("ParseFile error = %v, want node.conf:2: ...", err)
	}
	if _, err := ParseFile(filepath.Join(dir, "missing.conf")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ParseFile(missing) = %v, want ErrNotExist", err)
	}
}

func TestFormatRoundTrip(t *testing.T) {
	text := `Portal [::]:3260
Target iqn.2026-11.io.example:d1
    Alias two words
    Lun 0 Path=/a,Size=10G,IOMode=wb,ScsiSN=X1
    Lun 5 Path=/dev/sdz,Type=blockio,Thin=yes
    InitiatorAllow iqn.2026-11.io.example:h1,iqn.2026-11.io.example:h2
    IncomingUser in 123456789012
    OutgoingUser out 210987654321
Target eui.0123456789abcdef
    Lun 1 Path=/b,Sector=4096,Size=1M
`
	cfg, err := parse(t, text)
	if err != nil {
		t.Fatal(err)
	}
	again, err := parse(t, cfg.Format())
	if err != nil {
		t.Fatalf("Format output does not parse: %v\n%s", err, cfg.Format())
	}
	if a, b := stripLines(cfg), stripLines(again); !reflect.DeepEqual(a, b) {
		t.Errorf("round trip changed the config:\n%+v\n%+v\nformatted:\n%s", a, b, cfg.Format())
	}
	if !strings.Contains(cfg.Format(), "Lun 0 Path=/a,Type=fileio,Size=10G,Sector=512,IOMode=wb,Thin=yes,ScsiSN=X1\n") {
		t.Errorf("unexpected Format output:\n%s", cfg.Format())
	}
}
