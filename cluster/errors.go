package cluster

import (
	"errors"
	"fmt"
)

// Error is the typed error of a cluster command. Code is stable and
// machine-readable (it crosses the HTTP API and the forward hop from a
// follower to the leader); Message is for people and never holds a secret.
//
// errors.Is(err, ErrTargetExists) matches any *Error with the same Code, so
// callers compare against the sentinels below, whatever the message says.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code
}

// Sentinel errors. Each Apply failure is one of these, with a message that
// names the object concerned.
var (
	ErrBadCommand         = &Error{Code: "bad_command", Message: "malformed command"}
	ErrUnsupportedVersion = &Error{Code: "unsupported_version", Message: "unsupported command version"}
	ErrUnknownCommand     = &Error{Code: "unknown_command", Message: "unknown command type"}
	ErrInvalid            = &Error{Code: "invalid", Message: "invalid argument"}
	ErrTargetExists       = &Error{Code: "target_exists", Message: "target already exists"}
	ErrUnknownTarget      = &Error{Code: "unknown_target", Message: "no such target"}
	ErrTargetHasLUNs      = &Error{Code: "target_has_luns", Message: "target still has LUNs"}
	ErrLUNExists          = &Error{Code: "lun_exists", Message: "LUN already exists"}
	ErrUnknownLUN         = &Error{Code: "unknown_lun", Message: "no such LUN"}
	ErrBadSize            = &Error{Code: "bad_size", Message: "bad size"}
	ErrUnknownNode        = &Error{Code: "unknown_node", Message: "no such node"}
	ErrNotEnoughNodes     = &Error{Code: "not_enough_nodes", Message: "not enough alive nodes for the requested replicas"}
	ErrACLExists          = &Error{Code: "acl_exists", Message: "initiator already in the ACL"}
	ErrUnknownACL         = &Error{Code: "unknown_acl", Message: "initiator not in the ACL"}
	ErrStaleEpoch         = &Error{Code: "stale_epoch", Message: "stale epoch"}
	ErrNoLeader           = &Error{Code: "no_leader", Message: "no cluster leader"}
	ErrNotLeader          = &Error{Code: "not_leader", Message: "this node is not the leader"}
	ErrUnauthorized       = &Error{Code: "unauthorized", Message: "missing or wrong admin token"}
	ErrShutdown           = &Error{Code: "shutdown", Message: "node is shutting down"}
	// ErrOwnerLease refuses, for now, the removal of a node that owns
	// LUNs and may still serve them under its owner lease; retry later
	// (the message says when).
	ErrOwnerLease = &Error{Code: "owner_lease", Message: "the node may still serve its LUNs under its owner lease"}
)

// errf returns a new *Error with the code of base and a formatted message.
// Never pass a secret to it.
func errf(base *Error, format string, args ...any) *Error {
	return &Error{Code: base.Code, Message: fmt.Sprintf(format, args...)}
}
