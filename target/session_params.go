package target

import (
	"errors"
	"fmt"
	"net"
)

// SessionType is Normal or Discovery.
type SessionType int

const (
	SessionNormal SessionType = iota
	SessionDiscovery
)

// SessionParams are the negotiated session-wide operational parameters
// (RFC 7143 section 13). The login phase of the leading connection fills
// them; later connections of the session inherit them.
type SessionParams struct {
	MaxConnections       uint32
	InitialR2T           bool
	ImmediateData        bool
	MaxBurstLength       uint32
	FirstBurstLength     uint32
	DefaultTime2Wait     uint32
	DefaultTime2Retain   uint32
	MaxOutstandingR2T    uint32
	DataPDUInOrder       bool
	DataSequenceInOrder  bool
	ErrorRecoveryLevel   uint32
	TargetPortalGroupTag uint16
	// CmdSNWindow is how many commands the target accepts ahead
	// (MaxCmdSN - ExpCmdSN + 1) when a session starts. Only the target's
	// Defaults set it; zero means 128.
	CmdSNWindow uint32
}

// ConnParams are the negotiated per-connection parameters.
type ConnParams struct {
	HeaderDigest bool
	DataDigest   bool
	// InitiatorMaxRecvDataSegmentLength bounds the data segments the
	// target sends (declared by the initiator; default 8192).
	InitiatorMaxRecvDataSegmentLength uint32
	// TargetMaxRecvDataSegmentLength bounds the data segments the target
	// accepts (declared by the target).
	TargetMaxRecvDataSegmentLength uint32
}

// CHAPConfig holds CHAP credentials of a target (or of discovery
// sessions). User/Secret authenticate the initiator to the target;
// MoreUsers are further accounts the target accepts as well (ietd.conf
// allows several IncomingUser lines); MutualUser/MutualSecret, when set,
// authenticate the target to the initiator.
type CHAPConfig struct {
	User         string
	Secret       string
	MoreUsers    []CHAPUser
	MutualUser   string
	MutualSecret string
}

// CHAPUser is one account an initiator may authenticate as.
type CHAPUser struct {
	User, Secret string
}

// DigestPolicy is what a target accepts for HeaderDigest or DataDigest.
type DigestPolicy uint8

const (
	// DigestAny accepts None or CRC32C, whichever the initiator prefers
	// (the server's default).
	DigestAny DigestPolicy = iota
	// DigestNone accepts None only: an initiator that insists on CRC32C
	// gets Reject.
	DigestNone
	// DigestCRC32C accepts CRC32C only: the target offers it when the
	// initiator does not, and a login that ends without it fails.
	DigestCRC32C
)

// LoginParams are one target's own values in login negotiation (RFC 7143
// section 13), in place of the server's (ServerConfig) for logins to that
// target; a nil field keeps the server's value. The outcome of each key is
// still its result function over both sides' values (minimum, maximum,
// AND, OR), so a value here bounds or prefers, as ietd.conf's per-target
// keys did. DataPDUInOrder, DataSequenceInOrder and ErrorRecoveryLevel are
// not here: hatgt implements Yes, Yes and 0 only.
type LoginParams struct {
	MaxConnections           *uint32
	InitialR2T               *bool
	ImmediateData            *bool
	MaxRecvDataSegmentLength *uint32
	// MaxXmitDataSegmentLength bounds the data segments the target sends,
	// below the initiator's declared MaxRecvDataSegmentLength (ietd.conf's
	// key; not a key of the protocol).
	MaxXmitDataSegmentLength *uint32
	MaxBurstLength           *uint32
	FirstBurstLength         *uint32
	DefaultTime2Wait         *uint32
	DefaultTime2Retain       *uint32
	MaxOutstandingR2T        *uint32
	// HeaderDigest and DataDigest: DigestAny keeps the server's (both).
	HeaderDigest DigestPolicy
	DataDigest   DigestPolicy
}

// Validate reports values outside the ranges of RFC 7143 section 13, and
// a FirstBurstLength above MaxBurstLength when both are set.
func (p *LoginParams) Validate() error {
	if p == nil {
		return nil
	}
	var errs []error
	check := func(name string, v *uint32) {
		if v == nil {
			return
		}
		k, ok := negKeys[name]
		if name == "MaxXmitDataSegmentLength" {
			k, ok = negKeys["MaxRecvDataSegmentLength"], true
		}
		if ok && (uint64(*v) < k.min || uint64(*v) > k.max) {
			errs = append(errs, fmt.Errorf("%s %d out of range [%d, %d]", name, *v, k.min, k.max))
		}
	}
	check("MaxConnections", p.MaxConnections)
	check("MaxRecvDataSegmentLength", p.MaxRecvDataSegmentLength)
	check("MaxXmitDataSegmentLength", p.MaxXmitDataSegmentLength)
	check("MaxBurstLength", p.MaxBurstLength)
	check("FirstBurstLength", p.FirstBurstLength)
	check("DefaultTime2Wait", p.DefaultTime2Wait)
	check("DefaultTime2Retain", p.DefaultTime2Retain)
	check("MaxOutstandingR2T", p.MaxOutstandingR2T)
	if p.FirstBurstLength != nil && p.MaxBurstLength != nil && *p.FirstBurstLength > *p.MaxBurstLength {
		errs = append(errs, errors.New("FirstBurstLength must not exceed MaxBurstLength"))
	}
	for _, d := range []DigestPolicy{p.HeaderDigest, p.DataDigest} {
		if d > DigestCRC32C {
			errs = append(errs, fmt.Errorf("digest policy %d unknown", d))
		}
	}
	return errors.Join(errs...)
}

// LoginTarget is what the login phase needs to know of a target.
type LoginTarget struct {
	Name           string
	Alias          string
	PortalGroupTag uint16
	// AllowInitiator reports whether the initiator name may log in (ACL).
	AllowInitiator func(initiatorName string) bool
	// CHAP, when non-nil, makes CHAP mandatory for normal sessions.
	CHAP *CHAPConfig
	// AllowFrom, when set, is asked after AllowInitiator with the
	// address the initiator connects from (initiators.allow rules).
	AllowFrom func(initiatorName string, remote net.Addr) bool
	// Params, when set, are the target's own negotiation values.
	Params *LoginParams
}

// LoginStatus is a Login Response Status-Class/Status-Detail pair
// (RFC 7143 section 11.13.5) as class<<8 | detail.
type LoginStatus uint16

const (
	LoginSuccess              LoginStatus = 0x0000
	LoginTargetMovedTemp      LoginStatus = 0x0101
	LoginTargetMovedPerm      LoginStatus = 0x0102
	LoginInitiatorError       LoginStatus = 0x0200
	LoginAuthFailed           LoginStatus = 0x0201
	LoginForbidden            LoginStatus = 0x0202
	LoginTargetNotFound       LoginStatus = 0x0203
	LoginTargetRemoved        LoginStatus = 0x0204
	LoginUnsupportedVersion   LoginStatus = 0x0205
	LoginTooManyConnections   LoginStatus = 0x0206
	LoginMissingParameter     LoginStatus = 0x0207
	LoginCantIncludeInSession LoginStatus = 0x0208
	LoginSessionTypeNotSupp   LoginStatus = 0x0209
	LoginSessionNotExist      LoginStatus = 0x020a
	LoginInvalidDuringLogin   LoginStatus = 0x020b
	LoginTargetError          LoginStatus = 0x0300
	LoginServiceUnavailable   LoginStatus = 0x0301
	LoginOutOfResources       LoginStatus = 0x0302
)

// LoginResult is what a completed login phase hands to the session layer.
type LoginResult struct {
	InitiatorName  string
	InitiatorAlias string
	ISID           [6]byte
	// TSIH as sent by the initiator (0 for a new session).
	TSIH        uint16
	CID         uint16
	SessionType SessionType
	// Target is nil for discovery sessions.
	Target *LoginTarget
	// Session holds the negotiated session-wide parameters. On a
	// connection that joins an existing session (TSIH != 0) the
	// leading-only keys were answered Irrelevant and Session holds RFC
	// defaults: the session's own parameters apply.
	Session SessionParams
	Conn    ConnParams
	// CmdSN is the CmdSN of the login request (the session's next
	// expected CmdSN for a new session); ExpStatSN the initiator's.
	CmdSN     uint32
	ExpStatSN uint32
	// NextStatSN is the StatSN of the first response after login (the
	// last Login Response carried NextStatSN-1); the connection continues
	// from it.
	NextStatSN uint32
}

// LoginEnv is what the login phase asks of the server around it.
type LoginEnv interface {
	// LookupTarget returns the target named name as seen on this portal.
	LookupTarget(name string) (*LoginTarget, bool)
	// BindSession is called just before the final Login Response (T bit
	// and NSG=FullFeature): it creates, reinstates or joins the session
	// per RFC 7143 (ISID, TSIH rules) and returns the TSIH to send, or a
	// non-success status to fail the login with.
	BindSession(r *LoginResult) (tsih uint16, status LoginStatus)
	// Defaults returns the target's declared limits and preferences used
	// in negotiation (MaxRecvDataSegmentLength the target accepts,
	// MaxBurstLength, FirstBurstLength, MaxConnections,
	// MaxOutstandingR2T, ImmediateData, InitialR2T ...).
	Defaults() (SessionParams, ConnParams)
	// DiscoveryCHAP returns the credentials discovery sessions must
	// authenticate with, or nil when they need none.
	DiscoveryCHAP() *CHAPConfig
	// RemoteAddr is the initiator's address (nil when unknown).
	RemoteAddr() net.Addr
}
