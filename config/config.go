package config

import (
	"fmt"
	"strings"
)

// DefaultPortal is the listening address when the file names no Portal.
const DefaultPortal = "0.0.0.0:3260"

// Limits of the values the file may hold.
const (
	MaxLUN          = 16383 // flat-space LUN addressing (SAM-5)
	MaxNameLen      = 223   // iSCSI name, RFC 3720 section 3.2.6.1
	MaxAliasLen     = 255
	MinSecretLen    = 12 // 96 bits: RFC 7143 section 9.2.1 without IPsec
	MaxSecretLen    = 16 // longer secrets are refused by some initiators (warning)
	MaxSerialLen    = 32
	MaxScsiIDLen    = 16 // IET's limit for ScsiId
	MaxUserLen      = 255
	maxErrorsListed = 50
)

// Config is a parsed configuration file.
type Config struct {
	// File is the name the file was parsed under (for messages).
	File string
	// Portals are the "host:port" addresses to listen on; never empty
	// after Parse (DefaultPortal when the file has none).
	Portals []string
	// DiscoveryUsers are the global IncomingUser lines: discovery
	// (SendTargets) sessions must authenticate with CHAP as one of them.
	// Empty: discovery needs no authentication.
	DiscoveryUsers []User
	// DiscoveryOutgoingUser is the global OutgoingUser: the target's
	// answer when a discovery session asks for mutual CHAP.
	DiscoveryOutgoingUser *User
	// InitiatorsAllowFile and InitiatorsDenyFile name IET-format
	// initiators.allow/initiators.deny files ("" when not given);
	// InitiatorsAllow and InitiatorsDeny hold their rules once ParseFile
	// (or LoadInitiatorFiles) read them. See InitiatorAllowed.
	InitiatorsAllowFile string
	InitiatorsDenyFile  string
	InitiatorsAllow     *InitiatorRules
	InitiatorsDeny      *InitiatorRules
	Targets             []Target
	// Warnings are problems that do not stop the node, with their line.
	Warnings []*Error
}

// Target is one iSCSI target: a Target line and the lines under it.
type Target struct {
	Line  int
	Name  string // lower case
	Alias string
	// InitiatorAllow lists the initiator names that may log in; empty
	// means every initiator may.
	InitiatorAllow []string
	// IncomingUsers are the accounts initiators authenticate to this
	// target with (CHAP), one per IncomingUser line; empty means no
	// authentication.
	IncomingUsers []User
	// OutgoingUser authenticates this target to initiators (mutual CHAP);
	// only valid with IncomingUsers.
	OutgoingUser *User
	// Login holds the iSCSI login keys the block sets (ietd.conf's
	// per-target MaxConnections, InitialR2T, HeaderDigest, ...).
	Login Negotiation
	LUNs  []LUN
}

// Negotiation holds a target's own values of the iSCSI login keys
// (RFC 7143 section 13) that hatgt honours. A nil field was not given:
// the node's default applies. Values are within RFC 7143's ranges, and
// FirstBurstLength does not exceed MaxBurstLength when both are given.
type Negotiation struct {
	MaxConnections           *uint32
	InitialR2T               *bool
	ImmediateData            *bool
	MaxRecvDataSegmentLength *uint32
	// MaxXmitDataSegmentLength is IET's bound on the data segments the
	// target sends (not an RFC 7143 key).
	MaxXmitDataSegmentLength *uint32
	MaxBurstLength           *uint32
	FirstBurstLength         *uint32
	DefaultTime2Wait         *uint32
	DefaultTime2Retain       *uint32
	MaxOutstandingR2T        *uint32
	// HeaderDigest and DataDigest list the digests the target accepts,
	// in the file's order: "None", "CRC32C" or both.
	HeaderDigest []string
	DataDigest   []string
}

// User is a CHAP user name and secret.
type User struct {
	Name   string
	Secret string
}

// BackendType says how a LUN's Path is served.
type BackendType string

const (
	// FileIO serves a regular file through the page cache (sparse when
	// Thin); the file is created with Size when missing.
	FileIO BackendType = "fileio"
	// BlockIO serves a block device directly; its size is the device's.
	BlockIO BackendType = "blockio"
)

// IOMode is the write caching policy of a LUN, as IET's IOMode.
type IOMode string

const (
	// WriteBack acknowledges writes from the page cache and reports a
	// volatile write cache; data is durable after SYNCHRONIZE CACHE/FUA.
	WriteBack IOMode = "wb"
	// WriteThrough makes every write durable before its status.
	WriteThrough IOMode = "wt"
	// ReadOnly refuses every write (DATA PROTECT).
	ReadOnly IOMode = "ro"
)

// LUN is one logical unit of a target.
type LUN struct {
	Line   int
	Number uint64
	Path   string
	Type   BackendType
	// Size in bytes; 0 means the size of the existing file or device.
	Size   int64
	Sector uint32
	IOMode IOMode
	// Thin enables UNMAP and sparse allocation.
	Thin bool
	// SerialNumber (ScsiSN) overrides the serial derived from the target
	// name and LUN number; "" means derived.
	SerialNumber string
	// ScsiID (IET's ScsiId) is the identifier the LUN's VPD page 0x83
	// designator is derived from instead of the target name and LUN
	// number: LUNs with the same ScsiId report the same identity. ""
	// means derived.
	ScsiID string
}

// Error is one problem found in a configuration file.
type Error struct {
	File string
	Line int // 0 when the problem is with the whole file
	Msg  string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// ErrorList is every problem Parse found, in line order. Use errors.As to
// get at it, or errors.As with *Error for the first one.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find the individual errors.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}
