package target

import (
	"crypto/rand"
	"fmt"
	"io"
	"strings"
)

// Login stages (CSG/NSG values, RFC 7143 section 11.12.3).
const (
	stageSecurity    = 0
	stageOperational = 1
	stageFullFeature = 3
)

// Login Request/Response flag bits (byte 1).
const (
	loginFlagTransit  = 0x80
	loginFlagContinue = 0x40
)

// loginVersion is the only iSCSI version (Version-max/min/active).
const loginVersion = 0

// defaultCmdSNWindow is the command window opened at login when
// SessionParams.CmdSNWindow is zero.
const defaultCmdSNWindow = 128

// loginMaxSend bounds the data segment of a Login Response: during login
// the initiator's MaxRecvDataSegmentLength is the default 8192.
const loginMaxSend = loginMaxRecvDataSegmentLength

// LoginError is the error of a failed login. Status is the Status-Class
// and Status-Detail sent to the initiator. Reason never contains a secret.
type LoginError struct {
	Status LoginStatus
	Reason string
}

func (e *LoginError) Error() string {
	return fmt.Sprintf("iscsi login failed (status 0x%04x): %s", uint16(e.Status), e.Reason)
}

// authState is the progress of the security stage.
type authState uint8

const (
	authNone      authState = iota // no AuthMethod negotiated (yet)
	authCHAP                       // CHAP agreed, exchange in progress
	authSucceeded                  // AuthMethod=None agreed, or CHAP succeeded
)

// loginPhase is the login state machine of one connection (RFC 7143
// section 6): security negotiation, operational negotiation, transition to
// full feature phase. It does no I/O: the connection feeds it Login
// Requests and sends the responses it returns.
//
// Invariants: every response answers exactly one request and carries the
// next StatSN; a request whose ISID, TSIH or CID differs from the first,
// whose CSG is not the current stage, or that redeclares a key fails the
// login; the login never leaves the security stage of a normal session
// (or discovery session) with CHAP configured before the initiator passed
// CHAP.
type loginPhase struct {
	env LoginEnv
	// rand provides CHAP identifiers and challenges (crypto/rand unless a
	// test injects a deterministic source).
	rand io.Reader

	started  bool
	over     bool // done or failed: no more requests
	done     bool
	stage    uint8
	gotFirst bool // the first complete request text was processed

	isid   [6]byte
	tsih   uint16
	cid    uint16
	cmdSN  uint32
	statSN uint32 // StatSN of the next response
	window uint32

	inText  []byte // initiator text spread over PDUs with the C bit
	outText []byte // target text still to send in continuation responses

	seen        map[string]bool   // keys the initiator sent in this login
	identity    map[string]string // first value of each identity key
	sessionType SessionType
	target      *LoginTarget
	neg         *negotiator
	auth        authState
	chap        *chapServer
	// chapCfg is the CHAP the session must pass: the target's for a
	// normal session, the server's discovery CHAP for a discovery
	// session; nil when none is required. Set by identify.
	chapCfg     *CHAPConfig
	declaredTPG bool

	res LoginResult
}

func newLoginPhase(env LoginEnv) *loginPhase {
	return &loginPhase{env: env, rand: rand.Reader, seen: map[string]bool{}}
}

// handle processes one Login Request. It returns the Login Response to send
// (StatSN/ExpCmdSN/MaxCmdSN filled), done=true when the connection has
// entered full feature phase (result() is then valid), and a non-nil err
// when the login failed: send resp if non-nil, then close the connection.
func (l *loginPhase) handle(req *PDU) (resp *PDU, done bool, err error) {
	if l.over {
		return nil, l.done, &LoginError{Status: LoginInitiatorError, Reason: "login phase already over"}
	}
	if req == nil {
		l.over = true
		return nil, false, &LoginError{Status: LoginInitiatorError, Reason: "no request"}
	}
	if req.Opcode() != OpLoginReq {
		return l.fail(req, LoginInvalidDuringLogin, fmt.Sprintf("%v during login", req.Opcode()))
	}
	flags := req.Flags()
	transit := flags&loginFlagTransit != 0
	cont := flags&loginFlagContinue != 0
	csg := (flags >> 2) & 3
	nsg := flags & 3
	isid := [6]byte(req.BHS[8:14])
	tsih := req.U16(14)
	cid := req.U16(20)

	if !l.started {
		l.started = true
		l.isid, l.tsih, l.cid = isid, tsih, cid
		l.cmdSN = req.CmdSN()
		// RFC 7143 section 11.13.4: the first response carries the
		// connection's starting StatSN. Continuing from the initiator's
		// ExpStatSN keeps a restarted connection in step.
		l.statSN = req.ExpStatSN()
		sess, conn := l.env.Defaults()
		l.window = sess.CmdSNWindow
		if l.window == 0 {
			l.window = defaultCmdSNWindow
		}
		l.neg = newNegotiator(tsih == 0, sess, conn)
		l.res = LoginResult{ISID: isid, TSIH: tsih, CID: cid, CmdSN: req.CmdSN(), ExpStatSN: req.ExpStatSN()}
		if csg != stageSecurity && csg != stageOperational {
			return l.fail(req, LoginInitiatorError, fmt.Sprintf("first login request in stage %d", csg))
		}
		l.stage = csg
	} else if isid != l.isid || tsih != l.tsih || cid != l.cid {
		return l.fail(req, LoginInitiatorError, "ISID, TSIH or CID changed during login")
	}
	if req.BHS[3] > loginVersion {
		return l.fail(req, LoginUnsupportedVersion, fmt.Sprintf("Version-min %d", req.BHS[3]))
	}
	if transit && cont {
		return l.fail(req, LoginInitiatorError, "T and C bits both set")
	}
	if csg != l.stage {
		return l.fail(req, LoginInitiatorError, fmt.Sprintf("CSG %d, current stage %d", csg, l.stage))
	}
	if transit && !validLoginTransition(csg, nsg) {
		return l.fail(req, LoginInitiatorError, fmt.Sprintf("invalid transition %d -> %d", csg, nsg))
	}
	l.res.ExpStatSN = req.ExpStatSN()

	// The rest of a long target response: the initiator asks for it with
	// empty requests.
	if len(l.outText) > 0 {
		if len(req.Data) > 0 || cont {
			return l.fail(req, LoginInitiatorError, "text sent while the target's response continues")
		}
		return l.respond(req, nil, false, 0), false, nil
	}

	if len(l.inText)+len(req.Data) > MaxTextLen {
		return l.fail(req, LoginInitiatorError, "login text too long")
	}
	l.inText = append(l.inText, req.Data...)
	if cont {
		// More text follows: acknowledge with an empty response.
		return l.respond(req, nil, false, 0), false, nil
	}
	text := l.inText
	l.inText = nil
	kvs, perr := ParseText(text)
	if perr != nil {
		return l.fail(req, LoginInitiatorError, perr.Error())
	}
	return l.process(req, kvs, transit, nsg)
}

// validLoginTransition reports whether a request may ask to go from stage
// csg to nsg.
func validLoginTransition(csg, nsg uint8) bool {
	switch csg {
	case stageSecurity:
		return nsg == stageOperational || nsg == stageFullFeature
	case stageOperational:
		return nsg == stageFullFeature
	}
	return false
}

// process handles the complete text of one request.
func (l *loginPhase) process(req *PDU, kvs []KV, transit bool, nsg uint8) (*PDU, bool, error) {
	first := !l.gotFirst
	l.gotFirst = true
	repeated := map[string]bool{}
	for _, kv := range kvs {
		if isIdentityKey(kv.Key) {
			// libiscsi repeats InitiatorName/SessionType in a later
			// login PDU (discovery with CHAP credentials). RFC 7143 6.2
			// says "should not"; the same value again is harmless, a
			// different one is an error.
			if l.identity == nil {
				l.identity = map[string]string{}
			}
			if v, ok := l.identity[kv.Key]; ok {
				if v != kv.Value {
					return l.fail(req, LoginInitiatorError, fmt.Sprintf("key %s changed during login", kv.Key))
				}
				repeated[kv.Key] = true
				continue
			}
			l.identity[kv.Key] = kv.Value
		}
		if l.seen[kv.Key] {
			if _, answer := l.neg.offered[kv.Key]; !answer {
				return l.fail(req, LoginInitiatorError, fmt.Sprintf("key %s sent twice", kv.Key))
			}
		}
		l.seen[kv.Key] = true
	}
	if len(repeated) > 0 {
		kept := kvs[:0:0]
		for _, kv := range kvs {
			if !repeated[kv.Key] {
				kept = append(kept, kv)
			}
		}
		kvs = kept
	}
	var out []KV
	if first {
		if st, reason := l.identify(kvs); st != LoginSuccess {
			return l.fail(req, st, reason)
		}
	}

	sec := chapKeys{}
	var op []KV
	for _, kv := range kvs {
		switch {
		case kv.Key == "InitiatorName" || kv.Key == "TargetName" || kv.Key == "SessionType":
			if !first {
				return l.fail(req, LoginInitiatorError, kv.Key+" after the first login request")
			}
		case kv.Key == "InitiatorAlias":
			l.res.InitiatorAlias = kv.Value
		case kv.Key == "AuthMethod" || strings.HasPrefix(kv.Key, "CHAP_"):
			if l.stage != stageSecurity {
				return l.fail(req, LoginInitiatorError, kv.Key+" outside the security stage")
			}
			sec[kv.Key] = kv.Value
		default:
			op = append(op, kv)
		}
	}

	chapRequired := l.chapCfg != nil
	if l.stage == stageSecurity {
		kv, st, reason := l.authenticate(sec, transit, chapRequired)
		if st != LoginSuccess {
			return l.fail(req, st, reason)
		}
		out = append(out, kv...)
	} else if chapRequired && l.auth != authSucceeded {
		return l.fail(req, LoginAuthFailed, "CHAP required: security stage skipped")
	}

	// Operational keys are answered in either stage. Offers of ours the
	// initiator left unanswered keep the result the offer set.
	out = append(out, l.neg.negotiate(op)...)
	clear(l.neg.offered)

	if first && l.sessionType == SessionNormal && !l.declaredTPG {
		// RFC 7143 section 13.9: the target returns its portal group tag
		// in the response to the first request (C=0) naming the target.
		l.declaredTPG = true
		out = append(out, KV{Key: "TargetPortalGroupTag", Value: numValue(uint32(l.target.PortalGroupTag))})
		if l.target.Alias != "" {
			out = append(out, KV{Key: "TargetAlias", Value: l.target.Alias})
		}
	}

	authDone := l.auth == authSucceeded || (l.auth == authNone && !chapRequired)
	if transit && !authDone {
		transit = false // CHAP still in progress: stay in the security stage
	}
	if l.stage == stageOperational || (transit && nsg == stageFullFeature) {
		if offers := l.neg.offers(l.seen); len(offers) > 0 {
			out = append(out, offers...)
			// Our offers need answers before full feature phase.
			if l.stage == stageOperational {
				transit = false
			} else if transit {
				nsg = stageOperational
			}
		}
		out = append(out, l.neg.declare()...)
	}

	data := EncodeText(out)
	if len(data) > loginMaxSend {
		// Too long for one response: send it in pieces, and transit only
		// on a later request.
		l.outText = data
		return l.respond(req, nil, false, 0), false, nil
	}
	if !transit {
		return l.respond(req, data, false, 0), false, nil
	}
	if nsg != stageFullFeature {
		resp := l.respond(req, data, true, nsg)
		l.stage = nsg
		return resp, false, nil
	}
	return l.finish(req, data)
}

// identify checks the declarations of the first request: InitiatorName,
// SessionType and, for normal sessions, TargetName (RFC 7143 section
// 13.11 and 13.21).
func (l *loginPhase) identify(kvs []KV) (LoginStatus, string) {
	get := func(key string) (string, bool) {
		for _, kv := range kvs {
			if kv.Key == key {
				return kv.Value, true
			}
		}
		return "", false
	}
	name, ok := get("InitiatorName")
	if !ok || name == "" {
		return LoginMissingParameter, "InitiatorName missing"
	}
	l.res.InitiatorName = name
	st, _ := get("SessionType")
	switch st {
	case "", "Normal":
		l.sessionType = SessionNormal
	case "Discovery":
		l.sessionType = SessionDiscovery
	default:
		return LoginSessionTypeNotSupp, "unknown SessionType"
	}
	l.res.SessionType = l.sessionType
	if l.sessionType == SessionDiscovery {
		l.chapCfg = l.env.DiscoveryCHAP()
		return LoginSuccess, ""
	}
	tn, ok := get("TargetName")
	if !ok || tn == "" {
		return LoginMissingParameter, "TargetName missing"
	}
	t, ok := l.env.LookupTarget(tn)
	if !ok || t == nil {
		return LoginTargetNotFound, fmt.Sprintf("target %q not found", tn)
	}
	if t.AllowInitiator != nil && !t.AllowInitiator(name) {
		return LoginForbidden, fmt.Sprintf("initiator %q not allowed on %q", name, tn)
	}
	if t.AllowFrom != nil && !t.AllowFrom(name, l.env.RemoteAddr()) {
		return LoginForbidden, fmt.Sprintf("initiator %q not allowed on %q from %v", name, tn, l.env.RemoteAddr())
	}
	l.target = t
	l.res.Target = t
	l.chapCfg = t.CHAP
	l.neg.applyTarget(t.Params)
	l.neg.sess.TargetPortalGroupTag = t.PortalGroupTag
	return LoginSuccess, ""
}

// authenticate runs one step of the security stage with the security keys
// of a request and returns the keys to answer.
func (l *loginPhase) authenticate(sec chapKeys, transit, chapRequired bool) ([]KV, LoginStatus, string) {
	var out []KV
	if m, ok := sec["AuthMethod"]; ok {
		if l.auth != authNone {
			return nil, LoginInitiatorError, "AuthMethod renegotiated"
		}
		chose := ""
		for _, v := range strings.Split(m, ",") {
			if v == "CHAP" && l.chapCfg != nil {
				chose = v
				break
			}
			if v == "None" && !chapRequired {
				chose = v
				break
			}
		}
		switch chose {
		case "":
			return nil, LoginAuthFailed, "no acceptable AuthMethod offered"
		case "None":
			l.auth = authSucceeded
		case "CHAP":
			l.auth = authCHAP
			l.chap = newCHAPServer(l.chapCfg, l.rand)
		}
		out = append(out, KV{Key: "AuthMethod", Value: chose})
	}
	hasCHAP := false
	for k := range sec {
		if strings.HasPrefix(k, "CHAP_") {
			hasCHAP = true
		}
	}
	switch {
	case l.auth == authCHAP && l.chap.step == chapWaitAlgorithm:
		a, ok := sec["CHAP_A"]
		if !ok {
			if len(out) > 0 {
				return out, LoginSuccess, "" // AuthMethod just agreed
			}
			return nil, LoginAuthFailed, "CHAP_A expected"
		}
		if len(sec) > 1 && len(out) == 0 {
			return nil, LoginAuthFailed, "unexpected CHAP keys with CHAP_A"
		}
		kv, err := l.chap.algorithm(a)
		if err != nil {
			return nil, LoginAuthFailed, err.Error()
		}
		out = append(out, kv...)
	case l.auth == authCHAP && l.chap.step == chapWaitResponse:
		if _, ok := sec["CHAP_A"]; ok {
			return nil, LoginAuthFailed, "CHAP_A sent twice"
		}
		kv, err := l.chap.response(sec)
		if err != nil {
			return nil, LoginAuthFailed, err.Error()
		}
		l.auth = authSucceeded
		out = append(out, kv...)
	case hasCHAP:
		return nil, LoginAuthFailed, "CHAP keys without AuthMethod=CHAP"
	case chapRequired && l.auth == authNone && transit:
		return nil, LoginAuthFailed, "CHAP required: no AuthMethod negotiated"
	}
	return out, LoginSuccess, ""
}

// finish completes the login: it binds the session and answers with the
// transition to full feature phase.
func (l *loginPhase) finish(req *PDU, data []byte) (*PDU, bool, error) {
	if reason, ok := l.neg.digestsAgreed(); !ok {
		return l.fail(req, LoginInitiatorError, reason)
	}
	sess, conn := l.neg.final()
	if !l.neg.declaredMRDSL {
		// The initiator never heard our value: it assumes the default.
		conn.TargetMaxRecvDataSegmentLength = loginMaxRecvDataSegmentLength
	}
	l.res.Session = sess
	l.res.Conn = conn
	l.res.NextStatSN = l.statSN + 1
	tsih, st := l.env.BindSession(&l.res)
	if st != LoginSuccess {
		return l.fail(req, st, "session binding refused")
	}
	l.tsih = tsih
	resp := l.respond(req, data, true, stageFullFeature)
	l.stage = stageFullFeature
	l.over, l.done = true, true
	return resp, true, nil
}

// respond builds a Login Response to req with the given text, carrying
// the next StatSN. With an empty text and pending continuation text, it
// sends the next piece of that instead.
func (l *loginPhase) respond(req *PDU, data []byte, transit bool, nsg uint8) *PDU {
	p := l.header(req, LoginSuccess)
	var flags byte = l.stage << 2
	if len(l.outText) > 0 && data == nil {
		n := min(len(l.outText), loginMaxSend)
		data = l.outText[:n]
		l.outText = l.outText[n:]
		if len(l.outText) > 0 {
			flags |= loginFlagContinue
		} else {
			l.outText = nil
		}
	} else if transit {
		flags |= loginFlagTransit | nsg
	}
	p.SetFlags(flags)
	p.Data = data
	return p
}

// header fills the fields every Login Response carries and advances
// StatSN.
func (l *loginPhase) header(req *PDU, st LoginStatus) *PDU {
	p := NewPDU(OpLoginResp)
	p.BHS[2] = loginVersion // Version-max
	p.BHS[3] = loginVersion // Version-active
	copy(p.BHS[8:14], l.isid[:])
	p.SetU16(14, l.tsih)
	p.SetITT(req.ITT())
	p.SetStatSN(l.statSN)
	l.statSN++
	p.SetExpCmdSN(l.cmdSN)
	p.SetMaxCmdSN(l.cmdSN + l.window - 1)
	p.BHS[36] = byte(st >> 8)
	p.BHS[37] = byte(st)
	return p
}

// fail ends the login with status st.
func (l *loginPhase) fail(req *PDU, st LoginStatus, reason string) (*PDU, bool, error) {
	l.over = true
	if !l.started {
		// A failure on the very first PDU: answer with its own fields.
		l.isid = [6]byte(req.BHS[8:14])
		l.tsih = req.U16(14)
		l.cmdSN = req.CmdSN()
		l.statSN = req.ExpStatSN()
		l.window = defaultCmdSNWindow
	}
	p := l.header(req, st)
	p.SetFlags(l.stage << 2)
	l.res.NextStatSN = l.statSN
	return p, false, &LoginError{Status: st, Reason: reason}
}

// result is valid once handle returned done.
func (l *loginPhase) result() *LoginResult {
	if !l.done {
		return nil
	}
	r := l.res
	r.NextStatSN = l.statSN
	return &r
}

// isIdentityKey reports the declarative keys that name the session's
// parties; an initiator may repeat them with the same value.
func isIdentityKey(k string) bool {
	switch k {
	case "InitiatorName", "TargetName", "SessionType", "InitiatorAlias":
		return true
	}
	return false
}
