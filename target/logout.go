package target

import "time"

// Logout reasons and responses (RFC 7143 sections 11.14 and 11.15).
const (
	logoutCloseSession    = 0
	logoutCloseConnection = 1
	logoutRecovery        = 2

	logoutOK              = 0
	logoutCIDNotFound     = 1
	logoutRecoveryNotSupp = 2
	logoutCleanupFailed   = 3

	offLogoutCID     = 20
	offTime2Wait     = 40
	offTime2Retain   = 42
	logoutQuiesceMax = 30 * time.Second
)

// handleLogout runs a Logout Request in CmdSN order. The response goes
// out once the commands of the connections concerned are done; then those
// connections close.
func (c *conn) handleLogout(p *PDU) {
	c.order(p, func() { go c.logout(p) })
}

func (c *conn) logout(p *PDU) {
	ss := c.sess
	reason := p.Flags() & 0x7f
	r := NewPDU(OpLogoutResp)
	r.SetFinal(true)
	r.SetITT(p.ITT())
	r.SetU16(offTime2Wait, uint16(ss.params.DefaultTime2Wait))
	r.SetU16(offTime2Retain, uint16(ss.params.DefaultTime2Retain))
	var after func()

	switch reason {
	case logoutCloseSession:
		ss.quiesce(func(*task) bool { return true })
		// The I_T nexus ends before the initiator hears so: whatever it
		// does next (a new login, another path) sees it gone.
		ss.loseNexus()
		r.BHS[2] = logoutOK
		after = func() { ss.terminate("logout") }
	case logoutCloseConnection:
		cid := p.U16(offLogoutCID)
		ss.mu.Lock()
		target := ss.conns[cid]
		ss.mu.Unlock()
		if target == nil {
			r.BHS[2] = logoutCIDNotFound
			break
		}
		ss.quiesce(func(t *task) bool { return t.conn == target })
		ss.mu.Lock()
		last := len(ss.conns) == 1
		ss.mu.Unlock()
		if last {
			ss.loseNexus() // the session ends with this connection
		}
		r.BHS[2] = logoutOK
		if target == c {
			after = c.close
		} else {
			target.close()
		}
	case logoutRecovery:
		r.BHS[2] = logoutRecoveryNotSupp // error recovery level 0
	default:
		c.reject(rejectInvalidPDUField, p)
		return
	}
	if r.BHS[2] == logoutOK {
		// Time2Wait/Time2Retain only matter for a later recovery, which
		// error recovery level 0 does not offer.
		r.SetU16(offTime2Retain, 0)
	}
	c.sendAfter(r, stampStatus, after)
}

// quiesce lets the matching tasks that are executing finish, and aborts
// those that have not started (waiting for data or for their CmdSN).
func (ss *session) quiesce(match func(*task) bool) {
	ss.mu.Lock()
	var ts []*task
	for _, t := range ss.tasks {
		if match(t) {
			ts = append(ts, t)
		}
	}
	ss.mu.Unlock()
	deadline := time.NewTimer(logoutQuiesceMax)
	defer deadline.Stop()
	for _, t := range ts {
		t.mu.Lock()
		started := t.started
		t.mu.Unlock()
		if !started {
			t.abort()
		}
		select {
		case <-t.done:
		case <-deadline.C:
			t.abort()
			return
		}
	}
}

// requestLogout sends an Asynchronous Message asking the initiator to log
// out this connection's session within time2Logout seconds.
func (c *conn) requestLogout(time2Logout uint32) {
	p := NewPDU(OpAsyncMsg)
	p.SetFinal(true)
	p.SetITT(ReservedTag)
	p.BHS[36] = 1 // AsyncEvent: target requests logout
	p.SetU16(42, uint16(max(time2Logout, 1)))
	c.send(p, stampStatus) // queued: never blocks Shutdown on a stuck connection
}
