package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// IET's initiators.allow and initiators.deny files (named by the global
// InitiatorsAllowFile and InitiatorsDenyFile directives). Each line is a
// target name, or ALL for every target, then a comma-separated list of
// entries:
//
//	iqn.2026-11.com.example:db   iqn\.1993-08\.org\.debian:01:db.*, 192.0.2.0/24
//	ALL                          [2001:db8::]/32, 198.51.100.7
//
// An entry is ALL, an IPv4 address, an IPv6 address in brackets, either
// with /prefix-length, or else a regular expression an initiator name must
// match as a whole (case-insensitively).
//
// For a target, the first line naming it or ALL decides (IET stops at the
// first ALL line); a file with no such line matches nobody. The two files
// combine as in IET 1.4.20: with a deny file, an initiator is refused when
// the deny file matches it and the allow file does not; with an allow file
// alone, an initiator must match it; with neither, everyone may log in.

// InitiatorRules is one parsed initiators.allow or initiators.deny file.
type InitiatorRules struct {
	File  string // base name, for messages
	Lines []InitiatorRule
}

// InitiatorRule is one line of an initiators.allow/deny file.
type InitiatorRule struct {
	Line int
	// Target is a lower-case target name, or "ALL".
	Target string
	// All is set when the entries include ALL.
	All bool
	// Names are the initiator name patterns, as written.
	Names []string
	// Nets are the addresses and networks (an address alone is a /32 or
	// /128 prefix).
	Nets  []netip.Prefix
	names []*regexp.Regexp
}

// ParseInitiatorRules parses an initiators.allow/deny file read from r;
// name is used in messages. Lines for targets the configuration does not
// define are kept (they never apply) and reported by LoadInitiatorFiles.
func ParseInitiatorRules(name string, r io.Reader) (*InitiatorRules, error) {
	rules := &InitiatorRules{File: name}
	var errs ErrorList
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		tgt, list := text, ""
		if i := strings.IndexAny(text, " \t"); i >= 0 {
			tgt, list = text[:i], text[i+1:]
		}
		rule := InitiatorRule{Line: line, Target: strings.ToLower(tgt)}
		if tgt == "ALL" {
			rule.Target = "ALL"
		} else if err := CheckName(tgt); err != nil {
			errs = append(errs, &Error{File: name, Line: line, Msg: fmt.Sprintf("target %q: %v (or ALL for every target)", tgt, err)})
			continue
		}
		if strings.TrimSpace(list) == "" {
			errs = append(errs, &Error{File: name, Line: line, Msg: "no initiators after the target: give ALL, addresses or initiator names, separated by commas"})
			continue
		}
		for _, e := range strings.Split(list, ",") {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			if err := rule.add(e); err != nil {
				errs = append(errs, &Error{File: name, Line: line, Msg: err.Error()})
			}
		}
		rules.Lines = append(rules.Lines, rule)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, &Error{File: name, Line: line + 1, Msg: err.Error()})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return rules, nil
}

// add reads one entry of a rule's list.
func (r *InitiatorRule) add(e string) error {
	if e == "ALL" {
		r.All = true
		return nil
	}
	if p, ok, err := parseNet(e); ok {
		if err != nil {
			return err
		}
		r.Nets = append(r.Nets, p)
		return nil
	}
	re, err := regexp.Compile("(?i)^(?:" + e + ")$")
	if err != nil {
		return fmt.Errorf("initiator name pattern %q: %v", e, err)
	}
	r.Names = append(r.Names, e)
	r.names = append(r.names, re)
	return nil
}

// parseNet reads an address entry: a.b.c.d, a.b.c.d/n, [v6] or [v6]/n.
// ok is false when e is not meant as an address (so it is a name).
func parseNet(e string) (p netip.Prefix, ok bool, err error) {
	host, bits, hasBits := strings.Cut(e, "/")
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return p, true, fmt.Errorf("address %q: an IPv6 address is written [ADDR] or [ADDR]/LEN", e)
		}
		host = host[1 : len(host)-1]
	} else if _, err := netip.ParseAddr(host); err != nil {
		return p, false, nil
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.Zone() != "" {
		return p, true, fmt.Errorf("address %q: not an IP address", e)
	}
	if !hasBits {
		return netip.PrefixFrom(addr, addr.BitLen()), true, nil
	}
	p, err = netip.ParsePrefix(addr.String() + "/" + bits)
	if err != nil {
		return p, true, fmt.Errorf("network %q: the prefix length must be 0 to %d", e, addr.BitLen())
	}
	return p.Masked(), true, nil
}

// matches reports whether initiator, connecting from addr, is on the rule's
// list.
func (r *InitiatorRule) matches(initiator string, addr netip.Addr) bool {
	if r.All {
		return true
	}
	for _, re := range r.names {
		if re.MatchString(initiator) {
			return true
		}
	}
	addr = addr.Unmap()
	for _, n := range r.Nets {
		if addr.IsValid() && n.Contains(addr) {
			return true
		}
	}
	return false
}

// Match reports whether the file matches initiator (from addr) for target:
// the first line naming the target or ALL decides; without one, it does
// not match.
func (rs *InitiatorRules) Match(target, initiator string, addr netip.Addr) bool {
	target = strings.ToLower(target)
	for i := range rs.Lines {
		r := &rs.Lines[i]
		if r.Target == "ALL" || r.Target == target {
			return r.matches(initiator, addr)
		}
	}
	return false
}

// InitiatorAllowed reports whether initiators.allow/deny let initiator,
// connecting from addr (the zero Addr when unknown), log in to target
// and see it in discovery. It is true when neither file is configured.
func (c *Config) InitiatorAllowed(target, initiator string, addr netip.Addr) bool {
	allow, deny := c.InitiatorsAllow, c.InitiatorsDeny
	switch {
	case deny != nil:
		return !deny.Match(target, initiator, addr) || allow != nil && allow.Match(target, initiator, addr)
	case allow != nil:
		return allow.Match(target, initiator, addr)
	}
	return true
}

// LoadInitiatorFiles reads the files InitiatorsAllowFile and
// InitiatorsDenyFile name into InitiatorsAllow and InitiatorsDeny, and
// warns about lines for targets the configuration does not define. Errors
// are an ErrorList naming the file and line.
func (c *Config) LoadInitiatorFiles() error {
	var errs ErrorList
	load := func(path string, dst **InitiatorRules) {
		if path == "" {
			*dst = nil
			return
		}
		f, err := os.Open(path)
		if err != nil {
			msg := err.Error()
			if errors.Is(err, os.ErrNotExist) {
				msg = fmt.Sprintf("%s does not exist: create it (IET's format: a target name or ALL, then initiators) or remove the directive", path)
			}
			errs = append(errs, &Error{File: c.File, Msg: msg})
			return
		}
		defer f.Close()
		rules, err := ParseInitiatorRules(filepath.Base(path), f)
		if err != nil {
			var list ErrorList
			if errors.As(err, &list) {
				errs = append(errs, list...)
			}
			return
		}
		names := map[string]bool{}
		for _, t := range c.Targets {
			names[t.Name] = true
		}
		for _, r := range rules.Lines {
			if r.Target != "ALL" && !names[r.Target] {
				c.Warnings = append(c.Warnings, &Error{File: rules.File, Line: r.Line, Msg: fmt.Sprintf("no Target %s in %s: this line never applies", r.Target, c.File)})
			}
		}
		*dst = rules
	}
	load(c.InitiatorsAllowFile, &c.InitiatorsAllow)
	load(c.InitiatorsDenyFile, &c.InitiatorsDeny)
	if len(errs) > 0 {
		return errs
	}
	return nil
}
