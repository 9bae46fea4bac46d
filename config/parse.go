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

// ParseFile reads and parses the file at path. Messages name the file by
// its base name, as an administrator would look for it.
func ParseFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(filepath.Base(path), f)
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
	globalKeys = []string{"Portal", "Target"}
	targetKeys = []string{"Alias", "Lun", "InitiatorAllow", "IncomingUser", "OutgoingUser", "Target"}
	lunKeys    = []string{"Path", "Type", "Size", "Sector", "IOMode", "Thin", "ScsiSN"}
	// lunKeyAliases are other spellings admins bring from IET or tgt.
	lunKeyAliases = map[string]string{"blocksize": "Sector", "scsi_sn": "ScsiSN"}
)

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
		switch canonical(key, globalKeys) {
		case "Portal":
			p.portal(args)
		case "Target":
			p.target(args)
		default:
			if k := canonical(key, targetKeys); k != "" {
				p.errorf(p.line, "%s must be inside a Target block: put a \"Target iqn....\" line above it", k)
				return
			}
			p.errorf(p.line, "unknown directive %q%s", key, suggest(key, globalKeys))
		}
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
		p.user(&p.cur.IncomingUser, "IncomingUser", args)
	case "OutgoingUser":
		p.user(&p.cur.OutgoingUser, "OutgoingUser", args)
	default:
		if canonical(key, globalKeys) == "Portal" {
			p.errorf(p.line, "Portal is a global setting: move it above the first Target line")
			return
		}
		p.errorf(p.line, "unknown directive %q in Target block%s", key, suggest(key, append(targetKeys, globalKeys...)))
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
	p.endTarget()
	if len(args) != 1 {
		p.errorf(p.line, "Target takes one iSCSI name, e.g. \"Target iqn.2026-11.com.example:disk1\"")
		// Keep reading the block so its lines are checked too.
		p.cur = &Target{Line: p.line}
		return
	}
	name := args[0]
	if err := CheckName(name); err != nil {
		p.errorf(p.line, "Target name %q: %v", name, err)
	}
	name = strings.ToLower(name)
	for _, t := range p.cfg.Targets {
		if t.Name == name {
			p.errorf(p.line, "duplicate Target %s (first defined on line %d)", name, t.Line)
		}
	}
	p.cur = &Target{Line: p.line, Name: name}
}

// endTarget closes the current target block and checks it as a whole.
func (p *parser) endTarget() {
	t := p.cur
	if t == nil {
		return
	}
	p.cur = nil
	if t.OutgoingUser != nil && t.IncomingUser == nil {
		p.errorf(t.Line, "target %s: OutgoingUser (mutual CHAP) needs an IncomingUser too", t.Name)
	}
	if t.OutgoingUser != nil && t.IncomingUser != nil && t.OutgoingUser.Secret == t.IncomingUser.Secret {
		p.errorf(t.Line, "target %s: OutgoingUser and IncomingUser must have different secrets (RFC 7143 section 12.1.3)", t.Name)
	}
	if len(t.LUNs) == 0 {
		p.warnf(t.Line, "target %s has no Lun: initiators will see no disks", t.Name)
	}
	p.cfg.Targets = append(p.cfg.Targets, *t)
}

func (p *parser) finish() {
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
		if err := CheckName(n); err != nil {
			p.errorf(p.line, "InitiatorAllow %q: %v", n, err)
			continue
		}
		n = strings.ToLower(n)
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

func (p *parser) user(dst **User, key string, args []string) {
	if len(args) != 2 {
		p.errorf(p.line, "%s takes a user name and a secret, e.g. \"%s alice 0123456789abcdef\"", key, key)
		return
	}
	if *dst != nil {
		p.errorf(p.line, "second %s for this target: hatgt supports one per target", key)
		return
	}
	name, secret := args[0], args[1]
	if len(name) > MaxUserLen {
		p.errorf(p.line, "%s name longer than %d bytes", key, MaxUserLen)
		return
	}
	switch {
	case len(secret) < MinSecretLen:
		p.errorf(p.line, "%s secret is %d bytes; use %d to %d bytes (RFC 7143 section 9.2.1: shorter secrets need IPsec, which hatgt does not do)",
			key, len(secret), MinSecretLen, MaxSecretLen)
		return
	case len(secret) > MaxSecretLen:
		p.warnf(p.line, "%s secret is %d bytes; some initiators (Microsoft's) accept only %d to %d", key, len(secret), MinSecretLen, MaxSecretLen)
	}
	*dst = &User{Name: name, Secret: secret}
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

func setLUNKey(l *LUN, key, v string) error {
	switch key {
	case "Path":
		if !filepath.IsAbs(v) {
			return fmt.Errorf("Path %q must be absolute (start with /)", v)
		}
		l.Path = v
	case "Type":
		t := BackendType(strings.ToLower(v))
		if t != FileIO && t != BlockIO {
			return fmt.Errorf("Type=%s: want fileio or blockio%s", v, suggest(v, []string{"fileio", "blockio"}))
		}
		l.Type = t
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
