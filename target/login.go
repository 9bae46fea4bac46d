package target

import "errors"

// loginPhase is the login state machine of one connection (RFC 7143
// section 6): security negotiation, operational negotiation, transition to
// full feature phase. It does no I/O: the connection feeds it Login
// Requests and sends the responses it returns.
type loginPhase struct {
	env LoginEnv
}

func newLoginPhase(env LoginEnv) *loginPhase { return &loginPhase{env: env} }

// handle processes one Login Request. It returns the Login Response to send
// (StatSN/ExpCmdSN/MaxCmdSN filled), done=true when the connection has
// entered full feature phase (result() is then valid), and a non-nil err
// when the login failed: send resp if non-nil, then close the connection.
func (l *loginPhase) handle(req *PDU) (resp *PDU, done bool, err error) {
	return nil, false, errors.New("target: login not implemented")
}

// result is valid once handle returned done.
func (l *loginPhase) result() *LoginResult { return nil }
