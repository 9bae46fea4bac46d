package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func u32(v uint32) *uint32 { return &v }
func boolp(v bool) *bool   { return &v }

// TestIETSampleLoads parses testdata/ietd.conf, IET 1.4.20's sample with
// every directive on: it must load, honour what maps to hatgt and warn,
// with the line, about each key that does not.
func TestIETSampleLoads(t *testing.T) {
	cfg, err := ParseFile("testdata/ietd.conf")
	if err != nil {
		t.Fatalf("IET sample refused:\n%v", err)
	}
	if want := []User{{Name: "joe", Secret: "joe-disc-secret"}}; !reflect.DeepEqual(cfg.DiscoveryUsers, want) {
		t.Errorf("discovery users %v, want %v", cfg.DiscoveryUsers, want)
	}
	if u := cfg.DiscoveryOutgoingUser; u == nil || u.Name != "jack" {
		t.Errorf("discovery outgoing user %v", u)
	}
	if len(cfg.Targets) != 1 {
		t.Fatalf("%d targets", len(cfg.Targets))
	}
	tg := cfg.Targets[0]
	if tg.Name != "iqn.2001-04.com.example:storage.disk2.sys1.xyz" || tg.Alias != "Test" ||
		len(tg.IncomingUsers) != 1 || tg.OutgoingUser == nil || tg.OutgoingUser.Name != "jim" {
		t.Errorf("target %+v", tg)
	}
	if len(tg.LUNs) != 1 || tg.LUNs[0].ScsiID != "xyz" || tg.LUNs[0].SerialNumber != "xyz" || tg.LUNs[0].Path != "/dev/sdc" || tg.LUNs[0].Type != FileIO {
		t.Errorf("LUNs %+v", tg.LUNs)
	}
	want := Negotiation{
		MaxConnections: u32(1), InitialR2T: boolp(true), ImmediateData: boolp(true),
		MaxRecvDataSegmentLength: u32(8192), MaxXmitDataSegmentLength: u32(8192),
		MaxBurstLength: u32(262144), FirstBurstLength: u32(65536),
		DefaultTime2Wait: u32(2), DefaultTime2Retain: u32(20), MaxOutstandingR2T: u32(1),
		HeaderDigest: []string{"None", "CRC32C"}, DataDigest: []string{"None", "CRC32C"},
	}
	if !reflect.DeepEqual(tg.Login, want) {
		t.Errorf("login keys\n got %s\nwant %s", formatNegotiation(&tg.Login), formatNegotiation(&want))
	}
	var warned []string
	for _, w := range cfg.Warnings {
		warned = append(warned, strings.Fields(w.Msg)[0]+"@"+itoa(w.Line))
	}
	sort.Strings(warned)
	wantWarned := []string{"NOPInterval@44", "NOPTimeout@45", "QueuedCommands@48", "Wthreads@47", "iSNSAccessControl@12", "iSNSServer@11"}
	if !reflect.DeepEqual(warned, wantWarned) {
		t.Errorf("warnings %v, want %v:\n%v", warned, wantWarned, cfg.Warnings)
	}
	// What --check prints reads back the same.
	again, err := Parse("formatted", strings.NewReader(cfg.Format()))
	if err != nil {
		t.Fatalf("Format output does not parse: %v\n%s", err, cfg.Format())
	}
	if a, b := stripLines(cfg), stripLines(again); !reflect.DeepEqual(a, b) {
		t.Errorf("round trip changed the config:\n%s", cfg.Format())
	}
}

func TestIETKeysGood(t *testing.T) {
	text := `IncomingUser joe joe-secret-123
IncomingUser ann ann-secret-123
Target iqn.2026-11.io.example:d1
    Lun 0 Path=/a
    Lun 1 Sectors=1000,Type=nullio
    IncomingUser a a-secret-12345
    IncomingUser b b-secret-12345
    OutgoingUser t t-secret-12345
    maxconnections 4
    InitialR2T no
    ImmediateData YES
    MaxBurstLength 0x100000
    HeaderDigest CRC32C
    DataDigest none
    DataPDUInOrder Yes
    ErrorRecoveryLevel 0
    OFMarker No
    MaxSessions 0
`
	cfg, err := parse(t, text)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.DiscoveryUsers) != 2 || cfg.DiscoveryOutgoingUser != nil {
		t.Errorf("discovery users %v / %v", cfg.DiscoveryUsers, cfg.DiscoveryOutgoingUser)
	}
	tg := cfg.Targets[0]
	if len(tg.IncomingUsers) != 2 || len(tg.LUNs) != 1 {
		t.Errorf("target %+v", tg)
	}
	n := tg.Login
	if *n.MaxConnections != 4 || *n.InitialR2T || !*n.ImmediateData || *n.MaxBurstLength != 1<<20 ||
		!reflect.DeepEqual(n.HeaderDigest, []string{"CRC32C"}) || !reflect.DeepEqual(n.DataDigest, []string{"None"}) {
		t.Errorf("login keys %s", formatNegotiation(&n))
	}
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Line != 5 || !strings.Contains(cfg.Warnings[0].Msg, "Type=nullio") {
		t.Errorf("warnings %v, want the nullio LUN's only", cfg.Warnings)
	}
}

func TestIETKeysWarnings(t *testing.T) {
	const tgt = "Target iqn.2026-11.io.example:d1\nLun 0 Path=/a\n"
	tests := []struct {
		name, text string
		line       int
		msg        string
	}{
		{"isns", "iSNSServer 192.0.2.1\n" + tgt, 1, "iSNSServer is IET's and is ignored"},
		{"wthreads", tgt + "Wthreads 8\n", 3, "Wthreads 8 is IET's and is ignored"},
		{"queued", tgt + "QueuedCommands 32\n", 3, "command window is 128"},
		{"nop", tgt + "NOPInterval 5\n", 3, "NOP-In"},
		{"max sessions", tgt + "MaxSessions 4\n", 3, "does not limit the number of sessions"},
		{"target type", tgt + "Type 0\n", 3, "IET's internal target type"},
		{"marker interval", tgt + "OFMarkInt 2048\n", 3, "markers are obsolete"},
		{"marker", tgt + "IFMarker Yes\n", 3, "negotiate IFMarker No"},
		{"erl", tgt + "ErrorRecoveryLevel 2\n", 3, "negotiate ErrorRecoveryLevel 0"},
		{"data pdu order", tgt + "DataPDUInOrder No\n", 3, "negotiate DataPDUInOrder Yes"},
		{"sequence order", tgt + "DataSequenceInOrder No\n", 3, "negotiate DataSequenceInOrder Yes"},
		{"nullio", "Target iqn.2026-11.io.example:d1\nLun 0 Sectors=100,Type=nullio\n", 2, "Type=nullio"},
		{"same value twice", tgt + "MaxBurstLength 65536\nMaxBurstLength 0x10000\n", 4, "given again (first on line 3)"},
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

func TestIETKeysErrors(t *testing.T) {
	const tgt = "Target iqn.2026-11.io.example:d1\nLun 0 Path=/a\n"
	tests := []struct {
		name, text string
		line       int
		msg        string
	}{
		{"burst too small", tgt + "MaxBurstLength 100\n", 3, `MaxBurstLength 100: RFC 7143 allows 512 to 16777215 bytes; write e.g. "MaxBurstLength 1048576"`},
		{"segment too large", tgt + "MaxRecvDataSegmentLength 16777216\n", 3, "allows 512 to 16777215"},
		{"connections zero", tgt + "MaxConnections 0\n", 3, "allows 1 to 65535"},
		{"time2wait", tgt + "DefaultTime2Wait 4000\n", 3, "allows 0 to 3600 seconds"},
		{"erl out of range", tgt + "ErrorRecoveryLevel 3\n", 3, "allows 0 to 2"},
		{"not a number", tgt + "MaxOutstandingR2T many\n", 3, "MaxOutstandingR2T many"},
		{"negative", tgt + "MaxOutstandingR2T -1\n", 3, "MaxOutstandingR2T -1"},
		{"bad flag", tgt + "InitialR2T maybe\n", 3, "want Yes or No"},
		{"bad digest", tgt + "HeaderDigest CRC32\n", 3, `did you mean "CRC32C"?`},
		{"digest twice", tgt + "DataDigest None,None\n", 3, "None listed twice"},
		{"no value", tgt + "ImmediateData\n", 3, "takes one value"},
		{"contradiction", tgt + "MaxBurstLength 65536\nMaxBurstLength 8192\n", 4, "contradicts MaxBurstLength 65536 on line 3"},
		{"first burst above max", tgt + "MaxBurstLength 8192\nFirstBurstLength 65536\n", 4, "FirstBurstLength 65536 exceeds MaxBurstLength 8192 (line 3)"},
		{"typo of an IET key", tgt + "MaxBurstLenght 8192\n", 3, `did you mean "MaxBurstLength"?`},
		{"typo of an ignored key", tgt + "Wthread 8\n", 3, `did you mean "Wthreads"?`},
		{"unknown key", tgt + "FrobnicateLevel 3\n", 3, `unknown directive "FrobnicateLevel"`},
		{"login key before target", "MaxConnections 1\n" + tgt, 1, "must be inside a Target block"},
		{"global key in target", tgt + "iSNSServer 192.0.2.1\n", 3, "global setting"},
		{"discovery short secret", "IncomingUser joe secret\n" + tgt, 1, "secret is 6 bytes"},
		{"discovery outgoing only", "OutgoingUser jack 12charsecret\n" + tgt, 1, "discovery: OutgoingUser (mutual CHAP) needs an IncomingUser"},
		{"discovery same secrets", "IncomingUser joe 12charsecret\nOutgoingUser jack 12charsecret\n" + tgt, 2, "different secrets"},
		{"outgoing equals one of several incoming", tgt + "IncomingUser a 123456789012\nIncomingUser b 123456789013\nOutgoingUser c 123456789013\n", 1, "IncomingUser b must have different secrets"},
		{"scsiid too long", "Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,ScsiId=01234567890123456\n", 2, "at most 16"},
		{"scsiid typo", "Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,ScsiID=x,ScsiIdd=y\n", 2, `unknown key "ScsiIdd" (did you mean "ScsiId"?)`},
		{"sectors without nullio", "Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,Sectors=100\n", 2, "Sectors= is IET's nullio size"},
		{"nullio with path", "Target iqn.2026-11.io.example:d1\nLun 0 Path=/a,Type=nullio\n", 2, "takes no Path"},
		{"relative allow file", "InitiatorsAllowFile initiators.allow\n" + tgt, 1, "must be absolute"},
		{"allow file twice", "InitiatorsAllowFile /a\nInitiatorsAllowFile /b\n" + tgt, 2, "second InitiatorsAllowFile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(t, tc.text)
			var first *Error
			if !errors.As(err, &first) {
				t.Fatalf("Parse error = %v, want a *config.Error", err)
			}
			if first.Line != tc.line || !strings.Contains(first.Msg, tc.msg) {
				t.Errorf("got %v\nwant line %d with %q", err, tc.line, tc.msg)
			}
		})
	}
}

func TestInitiatorRules(t *testing.T) {
	const db = "iqn.2026-11.com.example:db"
	text := `# comment
iqn.2026-11.com.example:db   iqn\.1993-08\.org\.debian:01:dbhost[1-2], 192.0.2.0/24
iqn.2026-11.com.example:web  [2001:db8::1], [2001:db8:1::]/48
iqn.2026-11.com.example:open ALL
ALL 198.51.100.7
iqn.2026-11.com.example:late ALL
`
	rules, err := ParseInitiatorRules("initiators.allow", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	tests := []struct {
		target, initiator string
		addr              netip.Addr
		want              bool
	}{
		{db, "iqn.1993-08.org.debian:01:dbhost1", a("203.0.113.1"), true},
		{db, "IQN.1993-08.ORG.DEBIAN:01:DBHOST2", netip.Addr{}, true},
		{db, "iqn.1993-08.org.debian:01:dbhost3", a("203.0.113.1"), false},
		{db, "iqn.1993-08.org.debian:01:dbhost1x", a("203.0.113.1"), false}, // anchored
		{db, "iqn.2026-11.other:h", a("192.0.2.200"), true},
		{db, "iqn.2026-11.other:h", a("::ffff:192.0.2.200"), true}, // v4 on a [::] portal
		{db, "iqn.2026-11.other:h", a("192.0.3.1"), false},
		{"iqn.2026-11.com.example:web", "x", a("2001:db8::1"), true},
		{"iqn.2026-11.com.example:web", "x", a("2001:db8:1:ffff::5"), true},
		{"iqn.2026-11.com.example:web", "x", a("2001:db8::2"), false},
		{"iqn.2026-11.com.example:open", "x", a("203.0.113.1"), true},
		{"iqn.2026-11.com.example:other", "x", a("198.51.100.7"), true},
		{"iqn.2026-11.com.example:other", "x", a("198.51.100.8"), false},
		// The ALL line comes first: the later line never decides.
		{"iqn.2026-11.com.example:late", "x", a("203.0.113.1"), false},
	}
	for _, tc := range tests {
		if got := rules.Match(tc.target, tc.initiator, tc.addr); got != tc.want {
			t.Errorf("Match(%s, %s, %v) = %v, want %v", tc.target, tc.initiator, tc.addr, got, tc.want)
		}
	}

	for _, bad := range []struct{ text, msg string }{
		{"iqn.2026-11.com.example:db\n", "no initiators"},
		{"disk1 ALL\n", `target "disk1"`},
		{"ALL [2001:db8::1\n", "[ADDR]"},
		{"ALL 192.0.2.0/33\n", "prefix length"},
		{"ALL [zz::1]\n", "not an IP address"},
		{"ALL iqn.(unclosed\n", "pattern"},
	} {
		_, err := ParseInitiatorRules("initiators.allow", strings.NewReader("# x\n"+bad.text))
		var first *Error
		if !errors.As(err, &first) || first.Line != 2 || !strings.Contains(first.Msg, bad.msg) {
			t.Errorf("ParseInitiatorRules(%q) = %v, want line 2 with %q", bad.text, err, bad.msg)
		}
	}
}

func TestInitiatorAllowedCombinesFiles(t *testing.T) {
	const tgt = "iqn.2026-11.com.example:db"
	rules := func(text string) *InitiatorRules {
		r, err := ParseInitiatorRules("f", strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	friend, stranger := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("203.0.113.9")
	allow := rules("ALL 192.0.2.0/24\n")
	denyAll := rules("ALL ALL\n")
	tests := []struct {
		name        string
		allow, deny *InitiatorRules
		addr        netip.Addr
		want        bool
	}{
		{"no files", nil, nil, stranger, true},
		{"allow matches", allow, nil, friend, true},
		{"allow does not match", allow, nil, stranger, false},
		{"allow without a line for the target", rules("iqn.2026-11.com.example:other ALL\n"), nil, friend, false},
		{"deny all, allowed back", allow, denyAll, friend, true},
		{"deny all, not allowed back", allow, denyAll, stranger, false},
		{"deny all, no allow file", nil, denyAll, friend, false},
		{"deny does not match", nil, rules("ALL 198.51.100.0/24\n"), stranger, true},
	}
	for _, tc := range tests {
		c := &Config{InitiatorsAllow: tc.allow, InitiatorsDeny: tc.deny}
		if got := c.InitiatorAllowed(tgt, "iqn.2026-11.x:y", tc.addr); got != tc.want {
			t.Errorf("%s: InitiatorAllowed = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseFileLoadsInitiatorFiles(t *testing.T) {
	dir := t.TempDir()
	allow := filepath.Join(dir, "initiators.allow")
	conf := filepath.Join(dir, "hatgt.conf")
	write := func(path, text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(conf, "InitiatorsAllowFile "+allow+"\nTarget iqn.2026-11.io.example:d1\nLun 0 Path=/a\n")
	if _, err := ParseFile(conf); err == nil || !strings.Contains(err.Error(), "initiators.allow does not exist") {
		t.Errorf("missing allow file: %v", err)
	}
	write(allow, "iqn.2026-11.io.example:d1 192.0.2.1\niqn.2026-11.io.example:gone ALL\nALL 192.0.2.0/33\n")
	if _, err := ParseFile(conf); err == nil || !strings.HasPrefix(err.Error(), "initiators.allow:3: ") {
		t.Errorf("bad allow file: %v, want initiators.allow:3: ...", err)
	}
	write(allow, "iqn.2026-11.io.example:d1 192.0.2.1\niqn.2026-11.io.example:gone ALL\n")
	cfg, err := ParseFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.InitiatorsAllow == nil || len(cfg.Warnings) != 1 || cfg.Warnings[0].File != "initiators.allow" || cfg.Warnings[0].Line != 2 {
		t.Errorf("rules %v, warnings %v", cfg.InitiatorsAllow, cfg.Warnings)
	}
	if cfg.InitiatorAllowed("iqn.2026-11.io.example:d1", "x", netip.MustParseAddr("192.0.2.2")) {
		t.Error("an address the allow file does not list is allowed")
	}
	// The shipped sample allows everyone.
	write(conf, "InitiatorsAllowFile "+must(filepath.Abs("testdata/initiators.allow"))+"\nTarget iqn.2026-11.io.example:d1\nLun 0 Path=/a\n")
	cfg, err = ParseFile(conf)
	if err != nil || !cfg.InitiatorAllowed("iqn.2026-11.io.example:d1", "x", netip.MustParseAddr("203.0.113.1")) {
		t.Errorf("sample initiators.allow: %v", err)
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}
