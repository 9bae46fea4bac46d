package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ParseFile reads and parses the file at path, and the initiators.allow
// and initiators.deny files it names (LoadInitiatorFiles). Messages name
// each file by its base name, as an administrator would look for it.
func ParseFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, err := Parse(filepath.Base(path), f)
	if err != nil {
		return nil, err
	}
	if err := cfg.LoadInitiatorFiles(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse parses a configuration read from r; name is used in messages. On
// error the result is nil and the error is an ErrorList of every problem
// found.
func Parse(name string, r io.Reader) (*Config, error) {
	p := &parser{cfg: &Config{File: name}, file: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for sc.Scan() {
		p.line++
		p.parseLine(sc.Text())
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			p.errorf(p.line+1, "line longer than 64 KiB")
		} else {
			p.errorf(0, "read: %v", err)
		}
	}
	p.finish()
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		if len(p.errs) > maxErrorsListed {
			p.errs = append(p.errs[:maxErrorsListed], &Error{File: name, Msg: "too many errors; fix the ones above first"})
		}
		return nil, p.errs
	}
	if len(p.cfg.Portals) == 0 {
		p.cfg.Portals = []string{DefaultPortal}
	}
	return p.cfg, nil
}

type parser struct {
	cfg  *Config
	file string
	line int
	errs ErrorList
	cur  *Target // target block being read, nil before the first Target
	// negSeen holds the login keys of the current target block, with
	// their first line.
	negSeen map[string]negLine
	// userLines holds the line of each IncomingUser of the current
	// block (the global part, then each target); outgoingLine that of
	// its OutgoingUser.
	userLines    map[string]int
	outgoingLine int
	// globalDone is set once the global part was checked.
	globalDone bool
	// curNullIO is set when the current target had a Type=nullio Lun
	// (not served, but the target is not without LUNs by mistake).
	curNullIO bool
}

func (p *parser) errorf(line int, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) warnf(line int, format string, args ...any) {
	p.cfg.Warnings = append(p.cfg.Warnings, &Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// Directive names, in the spelling the documentation uses. Matching is
// case-insensitive.
var (
	globalKeys = []string{"Portal", "Target", "IncomingUser", "OutgoingUser", "InitiatorsAllowFile", "InitiatorsDenyFile"}
	targetKeys = []string{"Alias", "Lun", "InitiatorAllow", "IncomingUser", "OutgoingUser", "Target"}
	lunKeys    = []string{"Path", "Type", "Size", "Sector", "IOMode", "Thin", "ScsiSN", "ScsiId", "Sectors"}
	// lunKeyAliases are other spellings admins bring from IET or tgt.
	lunKeyAliases = map[string]string{"blocksize": "Sector", "scsi_sn": "ScsiSN", "scsi_id": "ScsiId"}
)

// knownTargetKeys are every word a Target block may start with, for
// "did you mean".
func knownTargetKeys() []string {
	out := append([]string(nil), targetKeys...)
	for _, s := range negSpecs {
		out = append(out, s.name)
	}
	return append(append(out, keysOf(ignoredTargetKeys)...), "Portal")
}

// stripComment removes a comment: '#' at the start of the line or after
// whitespace. A '#' inside a word (a secret, a path) is kept.
func stripComment(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t') {
			return s[:i]
		}
	}
	return s
}

func (p *parser) parseLine(raw string) {
	if strings.ContainsRune(raw, 0) {
		p.errorf(p.line, "NUL byte in line")
		return
	}
	fields := strings.Fields(stripComment(raw))
	if len(fields) == 0 {
		return
	}
	key, args := fields[0], fields[1:]
	if p.cur == nil {
		p.globalLine(key, args)
		return
	}
	switch canonical(key, targetKeys) {
	case "Target":
		p.target(args)
	case "Alias":
		p.alias(raw, args)
	case "Lun":
		p.lun(args)
	case "InitiatorAllow":
		p.initiatorAllow(args)
	case "IncomingUser":
		p.incomingUser(&p.cur.IncomingUsers, args)
	case "OutgoingUser":
		p.outgoingUser(&p.cur.OutgoingUser, args)
	default:
		if spec := findNegSpec(key); spec != nil {
			p.negotiation(spec, args)
			return
		}
		if k := canonicalIn(key, ignoredTargetKeys); k != "" {
			p.ignored(k, args, ignoredTargetKeys[k])
			return
		}
		if k := canonical(key, globalKeys); k != "" {
			p.errorf(p.line, "%s is a global setting: move it above the first Target line", k)
			return
		}
		if k := canonicalIn(key, ignoredGlobalKeys); k != "" {
			p.errorf(p.line, "%s is a global setting: move it above the first Target line (hatgt ignores it: %s)", k, ignoredGlobalKeys[k])
			return
		}
		p.errorf(p.line, "unknown directive %q in Target block%s", key, suggest(key, knownTargetKeys()))
	}
}

// globalLine reads a line before the first Target.
func (p *parser) globalLine(key string, args []string) {
	switch canonical(key, globalKeys) {
	case "Portal":
		p.portal(args)
	case "Target":
		p.target(args)
	case "IncomingUser":
		p.incomingUser(&p.cfg.DiscoveryUsers, args)
	case "OutgoingUser":
		p.outgoingUser(&p.cfg.DiscoveryOutgoingUser, args)
	case "InitiatorsAllowFile":
		p.ruleFile(&p.cfg.InitiatorsAllowFile, "InitiatorsAllowFile", args)
	case "InitiatorsDenyFile":
		p.ruleFile(&p.cfg.InitiatorsDenyFile, "InitiatorsDenyFile", args)
	default:
		if k := canonicalIn(key, ignoredGlobalKeys); k != "" {
			if len(args) == 0 {
				p.errorf(p.line, "%s needs a value", k)
				return
			}
			p.warnf(p.line, "%s is IET's and is ignored: %s", k, ignoredGlobalKeys[k])
			return
		}
		if k := canonical(key, targetKeys); k != "" || findNegSpec(key) != nil || canonicalIn(key, ignoredTargetKeys) != "" {
			p.errorf(p.line, "%s must be inside a Target block: put a \"Target iqn....\" line above it", cmpOrStr(k, key))
			return
		}
		p.errorf(p.line, "unknown directive %q%s", key, suggest(key, append(globalKeys, keysOf(ignoredGlobalKeys)...)))
	}
}

// ruleFile reads InitiatorsAllowFile/InitiatorsDenyFile.
func (p *parser) ruleFile(dst *string, key string, args []string) {
	switch {
	case len(args) != 1:
		p.errorf(p.line, "%s takes one file name, e.g. \"%s /etc/iet/initiators.%s\"", key, key, map[string]string{"InitiatorsAllowFile": "allow", "InitiatorsDenyFile": "deny"}[key])
	case !filepath.IsAbs(args[0]):
		p.errorf(p.line, "%s %q must be absolute (start with /)", key, args[0])
	case *dst != "":
		p.errorf(p.line, "second %s: give one file", key)
	default:
		*dst = args[0]
	}
}

func canonical(key string, keys []string) string {
	for _, k := range keys {
		if strings.EqualFold(k, key) {
			return k
		}
	}
	return ""
}

func (p *parser) portal(args []string) {
	if len(args) != 1 {
		p.errorf(p.line, "Portal takes one HOST:PORT address, e.g. \"Portal 0.0.0.0:3260\"")
		return
	}
	if err := checkPortal(args[0]); err != nil {
		p.errorf(p.line, "Portal %q: %v", args[0], err)
		return
	}
	for _, q := range p.cfg.Portals {
		if q == args[0] {
			p.errorf(p.line, "duplicate Portal %s", args[0])
			return
		}
		if overlap(q, args[0]) {
			p.errorf(p.line, "Portal %s overlaps Portal %s: a wildcard address (0.0.0.0, [::]) already listens on every address of its port; keep one of them", args[0], q)
			return
		}
	}
	p.cfg.Portals = append(p.cfg.Portals, args[0])
}

// overlap reports whether two portals cannot both listen: same port, and
// one of them a wildcard address (on Linux, [::] covers IPv4 too).
func overlap(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "" || ip != nil && ip.IsUnspecified()
	}
	return wild(ha) || wild(hb)
}

func checkPortal(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want HOST:PORT (IPv6 as [ADDR]:PORT)")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port must be a number from 0 to 65535 (iSCSI's is 3260; 0 picks a free port)")
	}
	if strings.ContainsAny(host, " \t/") {
		return fmt.Errorf("bad host %q", host)
	}
	return nil
}

func (p *parser) target(args []string) {
	p.endGlobal()
	p.endTarget()
	if len(args) != 1 {
		p.errorf(p.line, "Target takes one iSCSI name, e.g. \"Target iqn.2026-11.com.example:disk1\"")
		// Keep reading the block so its lines are checked too.
		p.cur = &Target{Line: p.line}
		return
	}
	name, err := CanonicalName(args[0])
	if err != nil {
		p.errorf(p.line, "Target name %q: %v", args[0], err)
	}
	for _, t := range p.cfg.Targets {
		if t.Name == name {
			p.errorf(p.line, "duplicate Target %s (first defined on line %d)", name, t.Line)
		}
	}
	p.cur = &Target{Line: p.line, Name: name}
}

// endGlobal checks the global part as a whole, once: at the first Target
// line or at the end of the file.
func (p *parser) endGlobal() {
	if p.globalDone {
		return
	}
	p.globalDone = true
	p.checkUsers("discovery", 0, p.cfg.DiscoveryUsers, p.cfg.DiscoveryOutgoingUser)
	p.userLines, p.outgoingLine = nil, 0
}

// checkUsers checks a block's CHAP accounts as a whole.
func (p *parser) checkUsers(what string, line int, in []User, out *User) {
	if out == nil {
		return
	}
	if len(in) == 0 {
		p.errorf(cmpOrInt(line, p.outgoingLine), "%s: OutgoingUser (mutual CHAP) needs an IncomingUser too", what)
		return
	}
	for _, u := range in {
		if u.Secret == out.Secret {
			p.errorf(cmpOrInt(line, p.outgoingLine), "%s: OutgoingUser and IncomingUser %s must have different secrets (RFC 7143 section 12.1.3)", what, u.Name)
		}
	}
}

func cmpOrInt(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// endTarget closes the current target block and checks it as a whole.
func (p *parser) endTarget() {
	t := p.cur
	if t == nil {
		return
	}
	p.cur = nil
	p.checkUsers("target "+t.Name, t.Line, t.IncomingUsers, t.OutgoingUser)
	p.checkNegotiation(t)
	p.negSeen, p.userLines, p.outgoingLine = nil, nil, 0
	nullIO := p.curNullIO
	p.curNullIO = false
	if len(t.LUNs) == 0 && !nullIO {
		p.warnf(t.Line, "target %s has no Lun: initiators will see no disks", t.Name)
	}
	p.cfg.Targets = append(p.cfg.Targets, *t)
}

func (p *parser) finish() {
	p.endGlobal()
	p.endTarget()
	if len(p.cfg.Targets) == 0 && len(p.errs) == 0 {
		p.errorf(0, "no Target defined: add a block such as\n"+
			"  Target iqn.2026-11.com.example:disk1\n"+
			"      Lun 0 Path=/var/lib/hatgt/disk1.img,Size=10G")
	}
	paths := map[string]int{}
	for _, t := range p.cfg.Targets {
		for _, l := range t.LUNs {
			if l.Path == "" {
				continue
			}
			clean := filepath.Clean(l.Path)
			if first, ok := paths[clean]; ok {
				p.errorf(l.Line, "Path %s is already used by the Lun on line %d: two LUNs must not share a file or device", l.Path, first)
				continue
			}
			paths[clean] = l.Line
		}
	}
}

func (p *parser) alias(raw string, args []string) {
	if len(args) == 0 {
		p.errorf(p.line, "Alias needs a value, e.g. \"Alias disk1\"")
		return
	}
	if p.cur.Alias != "" {
		p.errorf(p.line, "second Alias for this target")
		return
	}
	// The alias is the rest of the line: it may contain spaces.
	v := strings.Join(args, " ")
	if len(v) > MaxAliasLen {
		p.errorf(p.line, "Alias longer than %d bytes", MaxAliasLen)
		return
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			p.errorf(p.line, "Alias contains a control character")
			return
		}
	}
	p.cur.Alias = v
}

func (p *parser) initiatorAllow(args []string) {
	if len(args) == 0 {
		p.errorf(p.line, "InitiatorAllow needs an initiator name, e.g. \"InitiatorAllow iqn.1993-08.org.debian:01:host1\"")
		return
	}
	var names []string
	for _, a := range args {
		for _, n := range strings.Split(a, ",") {
			if n != "" {
				names = append(names, n)
			}
		}
	}
	for _, n := range names {
		if strings.EqualFold(n, "ALL") {
			p.errorf(p.line, "InitiatorAllow ALL is not needed: a target without InitiatorAllow lines accepts every initiator")
			continue
		}
		given := n
		n, err := CanonicalName(n)
		if err != nil {
			p.errorf(p.line, "InitiatorAllow %q: %v", given, err)
			continue
		}
		dup := false
		for _, o := range p.cur.InitiatorAllow {
			dup = dup || o == n
		}
		if dup {
			p.errorf(p.line, "initiator %s is already allowed", n)
			continue
		}
		p.cur.InitiatorAllow = append(p.cur.InitiatorAllow, n)
	}
}

// incomingUser reads an IncomingUser line: one more account.
func (p *parser) incomingUser(dst *[]User, args []string) {
	u, ok := p.user("IncomingUser", args)
	if !ok {
		return
	}
	if p.userLines == nil {
		p.userLines = map[string]int{}
	}
	if first, dup := p.userLines[u.Name]; dup {
		p.errorf(p.line, "IncomingUser %s is already defined on line %d: one line per user", u.Name, first)
		return
	}
	p.userLines[u.Name] = p.line
	*dst = append(*dst, u)
}

// outgoingUser reads an OutgoingUser line: at most one per block.
func (p *parser) outgoingUser(dst **User, args []string) {
	u, ok := p.user("OutgoingUser", args)
	if !ok {
		return
	}
	if *dst != nil {
		p.errorf(p.line, "second OutgoingUser: the target answers mutual CHAP with one account")
		return
	}
	p.outgoingLine = p.line
	*dst = &u
}

func (p *parser) user(key string, args []string) (User, bool) {
	if len(args) != 2 {
		p.errorf(p.line, "%s takes a user name and a secret, e.g. \"%s alice 0123456789abcdef\"", key, key)
		return User{}, false
	}
	name, secret := args[0], args[1]
	if len(name) > MaxUserLen {
		p.errorf(p.line, "%s name longer than %d bytes", key, MaxUserLen)
		return User{}, false
	}
	switch {
	case len(secret) < MinSecretLen:
		p.errorf(p.line, "%s secret is %d bytes; use %d to %d bytes (RFC 7143 section 9.2.1: shorter secrets need IPsec, which hatgt does not do)",
			key, len(secret), MinSecretLen, MaxSecretLen)
		return User{}, false
	case len(secret) > MaxSecretLen:
		p.warnf(p.line, "%s secret is %d bytes; some initiators (Microsoft's) accept only %d to %d", key, len(secret), MinSecretLen, MaxSecretLen)
	}
	return User{Name: name, Secret: secret}, true
}

func (p *parser) lun(args []string) {
	if len(args) < 2 {
		p.errorf(p.line, "Lun takes a number and parameters, e.g. \"Lun 0 Path=/srv/disk.img,Size=10G\"")
		return
	}
	n, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || n > MaxLUN {
		p.errorf(p.line, "Lun number %q: want 0 to %d", args[0], MaxLUN)
		return
	}
	for _, l := range p.cur.LUNs {
		if l.Number == n {
			p.errorf(p.line, "duplicate Lun %d in target %s (first on line %d)", n, p.cur.Name, l.Line)
			return
		}
	}
	l := LUN{Line: p.line, Number: n}
	seen := map[string]string{}
	ok := true
	// Parameters are comma separated; tolerate spaces after commas.
	for _, kv := range strings.Split(strings.Join(args[1:], ","), ",") {
		if kv == "" {
			continue
		}
		k, v, hasEq := strings.Cut(kv, "=")
		key := canonical(k, lunKeys)
		if alias, isAlias := lunKeyAliases[strings.ToLower(k)]; isAlias {
			key = alias
		}
		if key == "" {
			p.errorf(p.line, "unknown key %q%s", k, suggest(k, lunKeys))
			ok = false
			continue
		}
		if !hasEq || v == "" {
			p.errorf(p.line, "%s needs a value: %s=...", key, key)
			ok = false
			continue
		}
		if _, dup := seen[key]; dup {
			p.errorf(p.line, "%s given twice", key)
			ok = false
			continue
		}
		seen[key] = v
		if err := setLUNKey(&l, key, v); err != nil {
			p.errorf(p.line, "%v", err)
			ok = false
		}
	}
	if !ok {
		return
	}
	if l.Type == nullIO {
		if l.Path != "" {
			p.errorf(p.line, "Type=nullio takes no Path (IET's nullio is a device without storage)")
			return
		}
		p.curNullIO = true
		p.warnf(p.line, "Lun %d: Type=nullio (IET's test device that discards writes) does not exist in hatgt: this LUN is not served; "+
			"for a scratch disk use a sparse file, e.g. \"Lun %d Path=/var/lib/hatgt/scratch%d.img,Size=1G\"", n, n, n)
		return
	}
	if _, set := seen["Sectors"]; set {
		p.errorf(p.line, "Sectors= is IET's nullio size; with Type=%s give the size as Size=, e.g. Size=10G", cmpOrStr(string(l.Type), string(FileIO)))
		return
	}
	if l.Path == "" {
		typ := string(l.Type)
		if typ == "" {
			typ = string(FileIO)
		}
		p.errorf(p.line, "Lun %d has no Path (Type=%s needs Path=/the/%s)", n, typ, map[string]string{"fileio": "file", "blockio": "device"}[typ])
		return
	}
	if !p.lunDefaults(&l, seen) {
		return
	}
	p.cur.LUNs = append(p.cur.LUNs, l)
}

// lunDefaults fills unset parameters and checks relations between them.
func (p *parser) lunDefaults(l *LUN, seen map[string]string) bool {
	if l.Type == "" {
		l.Type = FileIO
	}
	if l.Sector == 0 {
		l.Sector = 512
	}
	if l.IOMode == "" {
		l.IOMode = WriteThrough
	}
	if _, set := seen["Thin"]; !set {
		l.Thin = l.Type == FileIO
	}
	if l.Type == BlockIO && l.Size != 0 {
		p.errorf(p.line, "Size is not allowed with Type=blockio: the device's own size is used")
		return false
	}
	if l.Size%int64(l.Sector) != 0 {
		p.errorf(p.line, "Size %s is not a multiple of Sector=%d", seen["Size"], l.Sector)
		return false
	}
	return true
}

// nullIO is IET's Type=nullio, read to be reported, never served.
const nullIO BackendType = "nullio"

func setLUNKey(l *LUN, key, v string) error {
	switch key {
	case "Path":
		if !filepath.IsAbs(v) {
			return fmt.Errorf("Path %q must be absolute (start with /)", v)
		}
		l.Path = v
	case "Type":
		t := BackendType(strings.ToLower(v))
		if t != FileIO && t != BlockIO && t != nullIO {
			return fmt.Errorf("Type=%s: want fileio or blockio%s", v, suggest(v, []string{"fileio", "blockio"}))
		}
		l.Type = t
	case "Sectors":
		if n, ok := parseNumber(v); !ok || n == 0 {
			return fmt.Errorf("Sectors=%s: want a number of sectors", v)
		}
	case "ScsiId":
		if len(v) > MaxScsiIDLen {
			return fmt.Errorf("ScsiId is %d characters; at most %d (as IET)", len(v), MaxScsiIDLen)
		}
		for _, r := range v {
			if r <= ' ' || r > '~' {
				return fmt.Errorf("ScsiId=%s: use printable ASCII characters only", v)
			}
		}
		l.ScsiID = v
	case "Size":
		n, err := ParseSize(v)
		if err != nil {
			return fmt.Errorf("Size=%s: %v", v, err)
		}
		l.Size = n
	case "Sector":
		switch v {
		case "512":
			l.Sector = 512
		case "4096":
			l.Sector = 4096
		default:
			return fmt.Errorf("Sector=%s: want 512 or 4096", v)
		}
	case "IOMode":
		m := IOMode(strings.ToLower(v))
		if m != WriteBack && m != WriteThrough && m != ReadOnly {
			return fmt.Errorf("IOMode=%s: want wb (write-back), wt (write-through) or ro (read-only)", v)
		}
		l.IOMode = m
	case "Thin":
		switch strings.ToLower(v) {
		case "yes", "true", "on", "1":
			l.Thin = true
		case "no", "false", "off", "0":
			l.Thin = false
		default:
			return fmt.Errorf("Thin=%s: want yes or no", v)
		}
	case "ScsiSN":
		if len(v) > MaxSerialLen {
			return fmt.Errorf("ScsiSN is %d characters; at most %d", len(v), MaxSerialLen)
		}
		for _, r := range v {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				return fmt.Errorf("ScsiSN=%s: use letters, digits, '-', '_' and '.' only", v)
			}
		}
		l.SerialNumber = v
	}
	return nil
}
