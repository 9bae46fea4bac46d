package target

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

// CHAPConfig holds CHAP credentials of a target. User/Secret authenticate
// the initiator to the target; MutualUser/MutualSecret, when set,
// authenticate the target to the initiator.
type CHAPConfig struct {
	User         string
	Secret       string
	MutualUser   string
	MutualSecret string
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
}
