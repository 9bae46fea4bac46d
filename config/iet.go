package config

import (
	"fmt"
	"strconv"
	"strings"
)

// The keys of IET's ietd.conf (1.4.20) that hatgt reads besides its own:
// the iSCSI login keys of a Target block, which it honours as the
// target's values in negotiation, and the keys it cannot honour, which are
// a warning with their line rather than an error, so that a working IET
// configuration loads as it is.

// negKind is the type of a login key's value.
type negKind uint8

const (
	negNum    negKind = iota // a number, decimal or 0x hex
	negFlag                  // Yes or No
	negDigest                // a list of None and CRC32C
)

// negSpec describes one login key of a Target block.
type negSpec struct {
	name     string
	kind     negKind
	min, max uint64
	unit     string // for messages: "bytes", "seconds", ...
	example  string // a valid line's value, for messages
	num      func(*Negotiation) **uint32
	flag     func(*Negotiation) **bool
	digest   func(*Negotiation) *[]string
	// only, when set, is the one value hatgt implements: another value
	// in range is a warning (the session negotiates only).
	only string
	why  string // why only that value
}

// negSpecs lists the login keys in the order Format writes them. The
// ranges are RFC 7143 section 13's.
var negSpecs = []negSpec{
	{name: "MaxConnections", kind: negNum, min: 1, max: 65535, unit: "connections per session", example: "1",
		num: func(n *Negotiation) **uint32 { return &n.MaxConnections }},
	{name: "InitialR2T", kind: negFlag, example: "Yes", flag: func(n *Negotiation) **bool { return &n.InitialR2T }},
	{name: "ImmediateData", kind: negFlag, example: "Yes", flag: func(n *Negotiation) **bool { return &n.ImmediateData }},
	{name: "MaxRecvDataSegmentLength", kind: negNum, min: 512, max: 1<<24 - 1, unit: "bytes", example: "262144",
		num: func(n *Negotiation) **uint32 { return &n.MaxRecvDataSegmentLength }},
	{name: "MaxXmitDataSegmentLength", kind: negNum, min: 512, max: 1<<24 - 1, unit: "bytes", example: "262144",
		num: func(n *Negotiation) **uint32 { return &n.MaxXmitDataSegmentLength }},
	{name: "MaxBurstLength", kind: negNum, min: 512, max: 1<<24 - 1, unit: "bytes", example: "1048576",
		num: func(n *Negotiation) **uint32 { return &n.MaxBurstLength }},
	{name: "FirstBurstLength", kind: negNum, min: 512, max: 1<<24 - 1, unit: "bytes", example: "262144",
		num: func(n *Negotiation) **uint32 { return &n.FirstBurstLength }},
	{name: "DefaultTime2Wait", kind: negNum, min: 0, max: 3600, unit: "seconds", example: "2",
		num: func(n *Negotiation) **uint32 { return &n.DefaultTime2Wait }},
	{name: "DefaultTime2Retain", kind: negNum, min: 0, max: 3600, unit: "seconds", example: "20",
		num: func(n *Negotiation) **uint32 { return &n.DefaultTime2Retain }},
	{name: "MaxOutstandingR2T", kind: negNum, min: 1, max: 65535, unit: "R2Ts per command", example: "8",
		num: func(n *Negotiation) **uint32 { return &n.MaxOutstandingR2T }},
	{name: "DataPDUInOrder", kind: negFlag, only: "Yes", why: "hatgt needs the data PDUs of a sequence in order"},
	{name: "DataSequenceInOrder", kind: negFlag, only: "Yes", why: "hatgt needs data sequences in order"},
	{name: "ErrorRecoveryLevel", kind: negNum, min: 0, max: 2, unit: "", example: "0", only: "0",
		why: "hatgt implements error recovery level 0 (a broken connection ends its session; initiators log in again)"},
	{name: "HeaderDigest", kind: negDigest, example: "None,CRC32C", digest: func(n *Negotiation) *[]string { return &n.HeaderDigest }},
	{name: "DataDigest", kind: negDigest, example: "None,CRC32C", digest: func(n *Negotiation) *[]string { return &n.DataDigest }},
	// Markers are obsolete (RFC 7143 section 13.25); IET read them.
	{name: "OFMarker", kind: negFlag, only: "No", why: "markers are obsolete (RFC 7143 section 13.25) and hatgt does not send them"},
	{name: "IFMarker", kind: negFlag, only: "No", why: "markers are obsolete (RFC 7143 section 13.25) and hatgt does not accept them"},
}

func findNegSpec(key string) *negSpec {
	for i := range negSpecs {
		if strings.EqualFold(negSpecs[i].name, key) {
			return &negSpecs[i]
		}
	}
	return nil
}

// ignoredTargetKeys are IET's Target block keys hatgt does not honour,
// with what hatgt does instead. They are a warning with their line.
var ignoredTargetKeys = map[string]string{
	"MaxSessions":    "hatgt does not limit the number of sessions of a target",
	"NOPInterval":    "hatgt pings every connection idle for 10 s with a NOP-In, for every target",
	"NOPTimeout":     "hatgt drops a connection that leaves its NOP-In unanswered for 90 s, for every target",
	"Wthreads":       "hatgt has no pool of IO threads to size",
	"QueuedCommands": "hatgt's command window is 128 commands per session, for every target",
	"Type":           "IET's internal target type; hatgt has one kind of target",
	"OFMarkInt":      "markers are obsolete (RFC 7143 section 13.25) and hatgt does not use them",
	"IFMarkInt":      "markers are obsolete (RFC 7143 section 13.25) and hatgt does not use them",
}

// ignoredGlobalKeys are IET's global keys hatgt does not honour.
var ignoredGlobalKeys = map[string]string{
	"iSNSServer":        "hatgt does not register with an iSNS server",
	"iSNSAccessControl": "hatgt does not register with an iSNS server",
}

// canonicalIn returns the key of m equal to key ignoring case, or "".
func canonicalIn(key string, m map[string]string) string {
	for k := range m {
		if strings.EqualFold(k, key) {
			return k
		}
	}
	return ""
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// ignored warns about an IET key hatgt does not honour. MaxSessions 0
// (no limit) is what hatgt does anyway and passes silently.
func (p *parser) ignored(key string, args []string, why string) {
	if len(args) != 1 {
		p.errorf(p.line, "%s takes one value, e.g. \"%s 0\"", key, key)
		return
	}
	if key == "MaxSessions" {
		n, ok := parseNumber(args[0])
		if !ok {
			p.errorf(p.line, "MaxSessions %q: want a number (0 means no limit)", args[0])
			return
		}
		if n == 0 {
			return
		}
	}
	p.warnf(p.line, "%s %s is IET's and is ignored: %s", key, args[0], why)
}

// parseNumber reads an ietd.conf number: decimal, or hex after "0x".
func parseNumber(s string) (uint64, bool) {
	base := 10
	digits := s
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		base, digits = 16, s[2:]
	}
	if digits == "" || digits[0] == '+' || digits[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, base, 64)
	return n, err == nil
}

// negotiation reads one login key of a Target block.
func (p *parser) negotiation(spec *negSpec, args []string) {
	if len(args) != 1 {
		p.errorf(p.line, "%s takes one value, e.g. \"%s %s\"", spec.name, spec.name, cmpOrStr(spec.example, spec.only))
		return
	}
	raw := args[0]
	var value string // normalised, for duplicate checks
	switch spec.kind {
	case negNum:
		n, ok := parseNumber(raw)
		if !ok || n < spec.min || n > spec.max {
			unit := ""
			if spec.unit != "" {
				unit = " " + spec.unit
			}
			p.errorf(p.line, "%s %s: RFC 7143 allows %d to %d%s; write e.g. \"%s %s\"", spec.name, raw, spec.min, spec.max, unit, spec.name, spec.example)
			return
		}
		value = strconv.FormatUint(n, 10)
		if !p.firstNeg(spec.name, value) {
			return
		}
		if spec.num != nil {
			v := uint32(n)
			*spec.num(&p.cur.Login) = &v
		}
	case negFlag:
		switch {
		case strings.EqualFold(raw, "yes"):
			value = "Yes"
		case strings.EqualFold(raw, "no"):
			value = "No"
		default:
			p.errorf(p.line, "%s %s: want Yes or No", spec.name, raw)
			return
		}
		if !p.firstNeg(spec.name, value) {
			return
		}
		if spec.flag != nil {
			v := value == "Yes"
			*spec.flag(&p.cur.Login) = &v
		}
	case negDigest:
		var list []string
		for _, d := range strings.Split(raw, ",") {
			var canon string
			switch {
			case strings.EqualFold(d, "None"):
				canon = "None"
			case strings.EqualFold(d, "CRC32C"):
				canon = "CRC32C"
			default:
				p.errorf(p.line, "%s %s: want None, CRC32C, or both (\"%s None,CRC32C\")%s", spec.name, raw, spec.name, suggest(d, []string{"None", "CRC32C"}))
				return
			}
			for _, o := range list {
				if o == canon {
					p.errorf(p.line, "%s %s: %s listed twice", spec.name, raw, canon)
					return
				}
			}
			list = append(list, canon)
		}
		value = strings.Join(list, ",")
		if !p.firstNeg(spec.name, value) {
			return
		}
		*spec.digest(&p.cur.Login) = list
	}
	if spec.only != "" && value != spec.only {
		p.warnf(p.line, "%s %s is not supported: %s; sessions of this target negotiate %s %s", spec.name, raw, spec.why, spec.name, spec.only)
	}
}

// firstNeg records the first line of a login key in the current target:
// the same value again is a warning, another value an error.
func (p *parser) firstNeg(key, value string) bool {
	if p.negSeen == nil {
		p.negSeen = map[string]negLine{}
	}
	if prev, ok := p.negSeen[key]; ok {
		if prev.value == value {
			p.warnf(p.line, "%s given again (first on line %d); one line is enough", key, prev.line)
		} else {
			p.errorf(p.line, "%s %s contradicts %s %s on line %d: keep one of them", key, value, key, prev.value, prev.line)
		}
		return false
	}
	p.negSeen[key] = negLine{line: p.line, value: value}
	return true
}

type negLine struct {
	line  int
	value string
}

// checkNegotiation checks the login keys of a finished Target block as a
// whole.
func (p *parser) checkNegotiation(t *Target) {
	n := &t.Login
	if n.FirstBurstLength != nil && n.MaxBurstLength != nil && *n.FirstBurstLength > *n.MaxBurstLength {
		p.errorf(p.negSeen["FirstBurstLength"].line, "FirstBurstLength %d exceeds MaxBurstLength %d (line %d): RFC 7143 section 13.14 wants FirstBurstLength <= MaxBurstLength",
			*n.FirstBurstLength, *n.MaxBurstLength, p.negSeen["MaxBurstLength"].line)
	}
}

func cmpOrStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// formatNegotiation writes the login keys of n, one line each.
func formatNegotiation(n *Negotiation) string {
	var b strings.Builder
	for _, s := range negSpecs {
		switch {
		case s.num != nil && *s.num(n) != nil:
			fmt.Fprintf(&b, "    %s %d\n", s.name, **s.num(n))
		case s.flag != nil && *s.flag(n) != nil:
			v := "No"
			if **s.flag(n) {
				v = "Yes"
			}
			fmt.Fprintf(&b, "    %s %s\n", s.name, v)
		case s.digest != nil && *s.digest(n) != nil:
			fmt.Fprintf(&b, "    %s %s\n", s.name, strings.Join(*s.digest(n), ","))
		}
	}
	return b.String()
}
