package target

import (
	"strconv"
	"strings"
)

// Operational parameter negotiation (RFC 7143 sections 6.2 and 13).
//
// The initiator offers keys; the target answers each once. Negotiated keys
// combine the offer with the target's own value through the key's result
// function (minimum, maximum, AND, OR, or the first acceptable list value);
// declarative keys just record the sender's value. The negotiator keeps
// the results so far, starting from the RFC defaults, so a key nobody
// mentions ends at its default.

// Special answer values (RFC 7143 section 6.2).
const (
	valReject        = "Reject"
	valIrrelevant    = "Irrelevant"
	valNotUnderstood = "NotUnderstood"
)

// Limits of numeric keys.
const (
	minDataSegmentLength = 512
	maxDataSegmentLength = 1<<24 - 1
	// loginMaxRecvDataSegmentLength is the default MaxRecvDataSegmentLength
	// in effect during login and when a side declares none.
	loginMaxRecvDataSegmentLength = 8192
)

// negKind is the type and result function of an operational key.
type negKind uint8

const (
	negBoolAnd       negKind = iota // Yes/No, result AND
	negBoolOr                       // Yes/No, result OR
	negNumMin                       // number, result minimum
	negNumMax                       // number, result maximum
	negDigest                       // list of CRC32C/None, target picks
	negDeclNum                      // declarative number (MaxRecvDataSegmentLength)
	negIrrelevant                   // answered Irrelevant (target-only keys, full-feature-only keys)
	negReject                       // answered Reject (obsolete marker intervals)
	negNo                           // answered No (obsolete markers, RDMAExtensions)
	negTaskReporting                // list, target supports RFC3720 only
	negProtocolLevel                // number 0..31, result minimum with ours
)

// negKey describes one operational key.
type negKey struct {
	kind negKind
	// leadingOnly keys are session-wide and may be negotiated only on the
	// leading connection (TSIH 0); elsewhere they are Irrelevant.
	leadingOnly bool
	min, max    uint64
}

// negKeys lists every operational key of RFC 7143 section 13 (and the
// obsolete ones of section 13.25). Security keys (AuthMethod, CHAP_*) and
// the login declarations (InitiatorName, TargetName, SessionType,
// InitiatorAlias) are handled by the login phase itself.
var negKeys = map[string]negKey{
	"HeaderDigest":             {kind: negDigest},
	"DataDigest":               {kind: negDigest},
	"MaxConnections":           {kind: negNumMin, leadingOnly: true, min: 1, max: 65535},
	"InitialR2T":               {kind: negBoolOr, leadingOnly: true},
	"ImmediateData":            {kind: negBoolAnd, leadingOnly: true},
	"MaxRecvDataSegmentLength": {kind: negDeclNum, min: minDataSegmentLength, max: maxDataSegmentLength},
	"MaxBurstLength":           {kind: negNumMin, leadingOnly: true, min: minDataSegmentLength, max: maxDataSegmentLength},
	"FirstBurstLength":         {kind: negNumMin, leadingOnly: true, min: minDataSegmentLength, max: maxDataSegmentLength},
	"DefaultTime2Wait":         {kind: negNumMax, leadingOnly: true, min: 0, max: 3600},
	"DefaultTime2Retain":       {kind: negNumMin, leadingOnly: true, min: 0, max: 3600},
	"MaxOutstandingR2T":        {kind: negNumMin, leadingOnly: true, min: 1, max: 65535},
	"DataPDUInOrder":           {kind: negBoolOr, leadingOnly: true},
	"DataSequenceInOrder":      {kind: negBoolOr, leadingOnly: true},
	"ErrorRecoveryLevel":       {kind: negNumMin, leadingOnly: true, min: 0, max: 2},
	"TaskReporting":            {kind: negTaskReporting, leadingOnly: true},
	"iSCSIProtocolLevel":       {kind: negProtocolLevel, leadingOnly: true, min: 0, max: 31},
	// Target-only declarations and full-feature-only keys.
	"TargetAlias":          {kind: negIrrelevant},
	"TargetAddress":        {kind: negIrrelevant},
	"TargetPortalGroupTag": {kind: negIrrelevant},
	"SendTargets":          {kind: negIrrelevant},
	// Obsolete keys (section 13.25): markers are answered No, their
	// intervals Reject.
	"OFMarker":  {kind: negNo},
	"IFMarker":  {kind: negNo},
	"OFMarkInt": {kind: negReject},
	"IFMarkInt": {kind: negReject},
	// iSER (RFC 7145): not over TCP.
	"RDMAExtensions": {kind: negNo, leadingOnly: true},
}

// ourProtocolLevel is the iSCSIProtocolLevel we implement (RFC 7143).
const ourProtocolLevel = 1

// rfcDefaults returns the RFC 7143 default of every operational key.
func rfcDefaults() (SessionParams, ConnParams) {
	return SessionParams{
			MaxConnections:      1,
			InitialR2T:          true,
			ImmediateData:       true,
			MaxBurstLength:      262144,
			FirstBurstLength:    65536,
			DefaultTime2Wait:    2,
			DefaultTime2Retain:  20,
			MaxOutstandingR2T:   1,
			DataPDUInOrder:      true,
			DataSequenceInOrder: true,
			ErrorRecoveryLevel:  0,
		}, ConnParams{
			InitiatorMaxRecvDataSegmentLength: loginMaxRecvDataSegmentLength,
			TargetMaxRecvDataSegmentLength:    loginMaxRecvDataSegmentLength,
		}
}

// targetLimits completes the target's declared values from
// LoginEnv.Defaults: zero sizes and counts mean "the RFC default", values
// are clamped into their legal ranges, and the ErrorRecoveryLevel is 0
// (the only level we implement).
func targetLimits(s SessionParams, c ConnParams) (SessionParams, ConnParams) {
	ds, dc := rfcDefaults()
	orDefault := func(v *uint32, def uint32, lo, hi uint32) {
		if *v == 0 {
			*v = def
		}
		*v = min(max(*v, lo), hi)
	}
	orDefault(&s.MaxConnections, ds.MaxConnections, 1, 65535)
	orDefault(&s.MaxBurstLength, ds.MaxBurstLength, minDataSegmentLength, maxDataSegmentLength)
	orDefault(&s.FirstBurstLength, ds.FirstBurstLength, minDataSegmentLength, maxDataSegmentLength)
	s.FirstBurstLength = min(s.FirstBurstLength, s.MaxBurstLength)
	orDefault(&s.MaxOutstandingR2T, ds.MaxOutstandingR2T, 1, 65535)
	s.DefaultTime2Wait = min(s.DefaultTime2Wait, 3600)
	s.DefaultTime2Retain = min(s.DefaultTime2Retain, 3600)
	s.ErrorRecoveryLevel = 0
	orDefault(&c.TargetMaxRecvDataSegmentLength, dc.TargetMaxRecvDataSegmentLength, minDataSegmentLength, maxDataSegmentLength)
	return s, c
}

// negotiator holds the state of operational negotiation of one login.
type negotiator struct {
	leading bool
	// tgtSess/tgtConn are the target's own values.
	tgtSess SessionParams
	tgtConn ConnParams
	// sess/conn are the results so far.
	sess SessionParams
	conn ConnParams
	// offered holds the keys the target offered and the initiator has
	// not answered yet.
	offered map[string]string
	// declaredMRDSL is set once the target declared its
	// MaxRecvDataSegmentLength.
	declaredMRDSL bool
	// maxXmit, when not zero, bounds the data segments the target sends
	// (ietd.conf's MaxXmitDataSegmentLength).
	maxXmit uint32
	// requireHeader/requireData: the target accepts CRC32C only.
	requireHeader, requireData bool
}

// applyTarget puts the target's own values (LoginParams) in place of the
// server's, once the login named the target. It runs before any
// operational key of the request that named the target is answered.
func (n *negotiator) applyTarget(p *LoginParams) {
	if p == nil {
		return
	}
	s, c := n.tgtSess, n.tgtConn
	num := func(dst *uint32, v *uint32) {
		if v != nil {
			*dst = *v
		}
	}
	flag := func(dst *bool, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	num(&s.MaxConnections, p.MaxConnections)
	flag(&s.InitialR2T, p.InitialR2T)
	flag(&s.ImmediateData, p.ImmediateData)
	num(&c.TargetMaxRecvDataSegmentLength, p.MaxRecvDataSegmentLength)
	num(&s.MaxBurstLength, p.MaxBurstLength)
	num(&s.FirstBurstLength, p.FirstBurstLength)
	num(&s.DefaultTime2Wait, p.DefaultTime2Wait)
	num(&s.DefaultTime2Retain, p.DefaultTime2Retain)
	num(&s.MaxOutstandingR2T, p.MaxOutstandingR2T)
	digest := func(allowed, required *bool, d DigestPolicy) {
		switch d {
		case DigestNone:
			*allowed, *required = false, false
		case DigestCRC32C:
			*allowed, *required = true, true
		}
	}
	digest(&c.HeaderDigest, &n.requireHeader, p.HeaderDigest)
	digest(&c.DataDigest, &n.requireData, p.DataDigest)
	if p.MaxXmitDataSegmentLength != nil {
		n.maxXmit = *p.MaxXmitDataSegmentLength
	}
	n.tgtSess, n.tgtConn = targetLimits(s, c)
}

// digestsAgreed reports whether the digests negotiated so far satisfy a
// target that requires CRC32C; the message names the one that does not.
func (n *negotiator) digestsAgreed() (string, bool) {
	switch {
	case n.requireHeader && !n.conn.HeaderDigest:
		return "HeaderDigest: the target requires CRC32C", false
	case n.requireData && !n.conn.DataDigest:
		return "DataDigest: the target requires CRC32C", false
	}
	return "", true
}

func newNegotiator(leading bool, tgtSess SessionParams, tgtConn ConnParams) *negotiator {
	ts, tc := targetLimits(tgtSess, tgtConn)
	s, c := rfcDefaults()
	s.TargetPortalGroupTag = tgtSess.TargetPortalGroupTag
	return &negotiator{leading: leading, tgtSess: ts, tgtConn: tc, sess: s, conn: c, offered: map[string]string{}}
}

// parseNumber parses a numerical value: decimal, or hexadecimal with a
// "0x" prefix (RFC 7143 section 6.1).
func parseNumber(s string) (uint64, bool) {
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		if len(s) > 18 {
			return 0, false
		}
		v, err := strconv.ParseUint(s[2:], 16, 64)
		return v, err == nil
	}
	if s == "" || len(s) > 20 || s[0] < '0' || s[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

func parseBool(s string) (v, ok bool) {
	switch s {
	case "Yes":
		return true, true
	case "No":
		return false, true
	}
	return false, false
}

func boolValue(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func numValue(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// numField returns the result field of a session-wide numeric key and the
// target's value.
func (n *negotiator) numField(key string) (result *uint32, target uint32) {
	s, t := &n.sess, &n.tgtSess
	switch key {
	case "MaxConnections":
		return &s.MaxConnections, t.MaxConnections
	case "MaxBurstLength":
		return &s.MaxBurstLength, t.MaxBurstLength
	case "FirstBurstLength":
		return &s.FirstBurstLength, t.FirstBurstLength
	case "DefaultTime2Wait":
		return &s.DefaultTime2Wait, t.DefaultTime2Wait
	case "DefaultTime2Retain":
		return &s.DefaultTime2Retain, t.DefaultTime2Retain
	case "MaxOutstandingR2T":
		return &s.MaxOutstandingR2T, t.MaxOutstandingR2T
	case "ErrorRecoveryLevel":
		return &s.ErrorRecoveryLevel, t.ErrorRecoveryLevel
	}
	return nil, 0
}

// boolField returns the result field of a boolean key and the target's
// value.
func (n *negotiator) boolField(key string) (result *bool, target bool) {
	s, t := &n.sess, &n.tgtSess
	switch key {
	case "InitialR2T":
		return &s.InitialR2T, t.InitialR2T
	case "ImmediateData":
		return &s.ImmediateData, t.ImmediateData
	case "DataPDUInOrder":
		return &s.DataPDUInOrder, t.DataPDUInOrder
	case "DataSequenceInOrder":
		return &s.DataSequenceInOrder, t.DataSequenceInOrder
	}
	return nil, false
}

// negotiate answers the operational keys of one request, in order. It
// returns the answers to send; keys that need no answer (declarations,
// answers to the target's own offers) produce none.
func (n *negotiator) negotiate(kvs []KV) []KV {
	var out []KV
	for _, kv := range kvs {
		if _, ok := n.offered[kv.Key]; ok {
			n.takeAnswer(kv.Key, kv.Value)
			continue
		}
		v, respond := n.answer(kv.Key, kv.Value)
		if !respond {
			continue
		}
		out = append(out, KV{Key: kv.Key, Value: v})
	}
	// FirstBurstLength is irrelevant when InitialR2T=Yes and
	// ImmediateData=No, and never exceeds MaxBurstLength; both may be
	// settled later in the same request.
	for i := range out {
		if out[i].Key != "FirstBurstLength" || out[i].Value == valReject || out[i].Value == valIrrelevant {
			continue
		}
		if n.sess.InitialR2T && !n.sess.ImmediateData {
			out[i].Value = valIrrelevant
			continue
		}
		if n.sess.FirstBurstLength > n.sess.MaxBurstLength {
			n.sess.FirstBurstLength = n.sess.MaxBurstLength
			out[i].Value = numValue(n.sess.FirstBurstLength)
		}
	}
	return out
}

// answer computes the target's answer to an offered key and records the
// result. respond is false for declarations that need no answer.
func (n *negotiator) answer(key, value string) (answer string, respond bool) {
	if strings.HasPrefix(key, "X-") || strings.HasPrefix(key, "X#") {
		return valNotUnderstood, true
	}
	k, ok := negKeys[key]
	if !ok {
		return valNotUnderstood, true
	}
	if k.leadingOnly && !n.leading {
		return valIrrelevant, true
	}
	switch k.kind {
	case negIrrelevant:
		return valIrrelevant, true
	case negReject:
		return valReject, true
	case negNo:
		return "No", true
	case negBoolAnd, negBoolOr:
		iv, ok := parseBool(value)
		if !ok {
			return valReject, true
		}
		res, tv := n.boolField(key)
		if k.kind == negBoolAnd {
			*res = iv && tv
		} else {
			*res = iv || tv
		}
		return boolValue(*res), true
	case negNumMin, negNumMax:
		iv, ok := parseNumber(value)
		if !ok || iv < k.min || iv > k.max {
			return valReject, true
		}
		res, tv := n.numField(key)
		if k.kind == negNumMin {
			*res = min(uint32(iv), tv)
		} else {
			*res = max(uint32(iv), tv)
		}
		return numValue(*res), true
	case negProtocolLevel:
		iv, ok := parseNumber(value)
		if !ok || iv > k.max {
			return valReject, true
		}
		return numValue(uint32(min(iv, ourProtocolLevel))), true
	case negTaskReporting:
		for _, v := range strings.Split(value, ",") {
			if v == "RFC3720" {
				return v, true
			}
		}
		return valReject, true
	case negDigest:
		supported, required := n.tgtConn.HeaderDigest, n.requireHeader
		res := &n.conn.HeaderDigest
		if key == "DataDigest" {
			supported, required, res = n.tgtConn.DataDigest, n.requireData, &n.conn.DataDigest
		}
		for _, v := range strings.Split(value, ",") {
			switch {
			case v == "None" && !required:
				*res = false
				return v, true
			case v == "CRC32C" && supported:
				*res = true
				return v, true
			}
		}
		return valReject, true
	case negDeclNum:
		iv, ok := parseNumber(value)
		if !ok || iv < k.min || iv > k.max {
			return valReject, true
		}
		n.conn.InitiatorMaxRecvDataSegmentLength = uint32(iv)
		return "", false
	}
	return valNotUnderstood, true
}

// takeAnswer records the initiator's answer to a key the target offered.
// The result function gives the same result whichever side offered; a
// Reject, Irrelevant or malformed answer leaves the result the offer
// already set (the offer against the RFC default).
func (n *negotiator) takeAnswer(key, value string) {
	delete(n.offered, key)
	k := negKeys[key]
	switch k.kind {
	case negBoolAnd, negBoolOr:
		if iv, ok := parseBool(value); ok {
			res, tv := n.boolField(key)
			if k.kind == negBoolAnd {
				*res = iv && tv
			} else {
				*res = iv || tv
			}
		}
	case negNumMin, negNumMax:
		if iv, ok := parseNumber(value); ok && iv >= k.min && iv <= k.max {
			res, tv := n.numField(key)
			if k.kind == negNumMin {
				*res = min(uint32(iv), tv)
			} else {
				*res = max(uint32(iv), tv)
			}
		}
	case negDigest:
		// The target offers a digest only to require CRC32C.
		res := &n.conn.HeaderDigest
		if key == "DataDigest" {
			res = &n.conn.DataDigest
		}
		*res = value == "CRC32C"
	}
}

// offers returns the keys the target must offer itself because the RFC
// default the initiator would otherwise assume exceeds what the target
// accepts (or, for digests, because the target requires CRC32C), skipping
// keys already negotiated (seen). It records the offers and their results.
func (n *negotiator) offers(seen map[string]bool) []KV {
	var out []KV
	offer := func(key, value string) {
		if seen[key] {
			return
		}
		if _, ok := n.offered[key]; ok {
			return
		}
		n.offered[key] = value
		seen[key] = true
		out = append(out, KV{Key: key, Value: value})
	}
	ds, _ := rfcDefaults()
	t := n.tgtSess
	if n.requireHeader && !n.conn.HeaderDigest {
		offer("HeaderDigest", "CRC32C")
	}
	if n.requireData && !n.conn.DataDigest {
		offer("DataDigest", "CRC32C")
	}
	if !n.leading {
		return out // the rest is session-wide
	}
	if !t.ImmediateData && n.sess.ImmediateData {
		n.sess.ImmediateData = false
		offer("ImmediateData", "No")
	}
	if t.MaxBurstLength < ds.MaxBurstLength && n.sess.MaxBurstLength > t.MaxBurstLength {
		n.sess.MaxBurstLength = t.MaxBurstLength
		offer("MaxBurstLength", numValue(t.MaxBurstLength))
	}
	if t.FirstBurstLength < ds.FirstBurstLength && n.sess.FirstBurstLength > t.FirstBurstLength {
		n.sess.FirstBurstLength = t.FirstBurstLength
		offer("FirstBurstLength", numValue(t.FirstBurstLength))
	}
	if t.DefaultTime2Wait > ds.DefaultTime2Wait && n.sess.DefaultTime2Wait < t.DefaultTime2Wait {
		n.sess.DefaultTime2Wait = t.DefaultTime2Wait
		offer("DefaultTime2Wait", numValue(t.DefaultTime2Wait))
	}
	if t.DefaultTime2Retain < ds.DefaultTime2Retain && n.sess.DefaultTime2Retain > t.DefaultTime2Retain {
		n.sess.DefaultTime2Retain = t.DefaultTime2Retain
		offer("DefaultTime2Retain", numValue(t.DefaultTime2Retain))
	}
	return out
}

// declare returns the target's declarations not made yet: its
// MaxRecvDataSegmentLength.
func (n *negotiator) declare() []KV {
	if n.declaredMRDSL {
		return nil
	}
	n.declaredMRDSL = true
	n.conn.TargetMaxRecvDataSegmentLength = n.tgtConn.TargetMaxRecvDataSegmentLength
	return []KV{{Key: "MaxRecvDataSegmentLength", Value: numValue(n.tgtConn.TargetMaxRecvDataSegmentLength)}}
}

// final returns the negotiated parameters, with the cross-key rule that
// FirstBurstLength never exceeds MaxBurstLength.
func (n *negotiator) final() (SessionParams, ConnParams) {
	s, c := n.sess, n.conn
	s.FirstBurstLength = min(s.FirstBurstLength, s.MaxBurstLength)
	if n.maxXmit != 0 {
		c.InitiatorMaxRecvDataSegmentLength = min(c.InitiatorMaxRecvDataSegmentLength, n.maxXmit)
	}
	return s, c
}
