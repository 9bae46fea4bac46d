package target

import (
	"cmp"
	"fmt"
	"sync"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

// session is one iSCSI session: its connections, CmdSN window, the tasks
// in progress on any of its connections, and the I_T nexus it is for the
// SCSI layer.
type session struct {
	srv    *Server
	key    sessionKey
	tsih   uint16
	typ    SessionType
	tgt    *targetEntry // nil for discovery sessions
	params SessionParams
	nexus  *scsi.Nexus
	seq    *sequencer
	budget *writeBudget

	nexusOnce sync.Once

	mu      sync.Mutex
	conns   map[uint16]*conn
	tasks   map[uint32]*task // by ITT
	joining int              // logins replacing a connection (bindSession)
	ended   bool
	endErr  string
	endDone chan struct{}
}

func newSession(srv *Server, key sessionKey, tsih uint16, r *LoginResult, tgt *targetEntry) *session {
	ss := &session{
		srv:     srv,
		key:     key,
		tsih:    tsih,
		typ:     r.SessionType,
		tgt:     tgt,
		params:  r.Session,
		seq:     newSequencer(r.CmdSN, cmp.Or(r.Session.CmdSNWindow, srv.cfg.CmdWindow)),
		conns:   map[uint16]*conn{},
		tasks:   map[uint32]*task{},
		endDone: make(chan struct{}),
	}
	p := &ss.params
	if p.MaxBurstLength == 0 {
		p.MaxBurstLength = 262144
	}
	if p.FirstBurstLength == 0 {
		p.FirstBurstLength = 65536
	}
	if p.FirstBurstLength > p.MaxBurstLength {
		p.FirstBurstLength = p.MaxBurstLength
	}
	if p.MaxOutstandingR2T == 0 {
		p.MaxOutstandingR2T = 1
	}
	if p.MaxConnections == 0 {
		p.MaxConnections = 1
	}
	ss.budget = newWriteBudget(srv.cfg.SessionWriteBudget, ss.seq.depth, unsolicitedPerTask(p, srv.cfg.MaxRecvDataSegmentLength))
	if tgt != nil {
		ss.nexus = &scsi.Nexus{
			InitiatorName:      r.InitiatorName,
			InitiatorPort:      fmt.Sprintf("%s,i,0x%012x", r.InitiatorName, r.ISID[:]),
			TargetName:         tgt.cfg.Name,
			TargetPort:         fmt.Sprintf("%s,t,0x%04x", tgt.cfg.Name, tgt.cfg.PortalGroupTag),
			RelativeTargetPort: tgt.cfg.RelativePortID,
			TargetPortGroup:    tgt.cfg.PortalGroupTag,
		}
	}
	return ss
}

// unsolicitedPerTask is the most write data one command may carry without
// being asked: immediate data (at most FirstBurstLength and one data
// segment) and, with InitialR2T=No, unsolicited Data-Out up to
// FirstBurstLength in all.
func unsolicitedPerTask(p *SessionParams, maxSegment uint32) uint32 {
	switch {
	case !p.InitialR2T:
		return p.FirstBurstLength
	case p.ImmediateData:
		return min(p.FirstBurstLength, maxSegment)
	}
	return 0
}

// allocTSIHLocked returns an unused non-zero TSIH. s.mu must be held.
func (s *Server) allocTSIHLocked() uint16 {
	for {
		s.nextTSIH++
		if s.nextTSIH == 0 {
			continue
		}
		if _, used := s.byTSIH[s.nextTSIH]; !used {
			return s.nextTSIH
		}
	}
}

// bindSession implements LoginEnv.BindSession for connection c: it
// creates a session (TSIH 0), reinstates one (TSIH 0 and an existing
// session with the same initiator, ISID and target), or adds c to an
// existing session (TSIH != 0), reinstating a connection with the same
// CID.
func (s *Server) bindSession(c *conn, r *LoginResult) (uint16, LoginStatus) {
	var te *targetEntry
	key := sessionKey{initiator: r.InitiatorName, isid: r.ISID}
	if r.SessionType == SessionNormal {
		if r.Target == nil {
			return 0, LoginMissingParameter
		}
		te = s.lookupTarget(r.Target.Name)
		if te == nil {
			return 0, LoginTargetRemoved
		}
		key.target = te.cfg.Name
	}

	if r.TSIH == 0 {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return 0, LoginServiceUnavailable
		}
		old := s.sessions[key]
		if old != nil {
			// Session reinstatement (RFC 7143 section 6.3.5): the old
			// session goes first, with its tasks.
			delete(s.sessions, key)
			delete(s.byTSIH, old.tsih)
		}
		s.mu.Unlock()
		if old != nil {
			c.log.Info("session reinstatement", "initiator", r.InitiatorName, "old_tsih", old.tsih)
			old.terminate("session reinstated")
			old.waitConns(5 * time.Second)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closing {
			return 0, LoginServiceUnavailable
		}
		if _, taken := s.sessions[key]; taken {
			// Another login for the same ISID won the race.
			return 0, LoginCantIncludeInSession
		}
		tsih := s.allocTSIHLocked()
		ss := newSession(s, key, tsih, r, te)
		ss.conns[r.CID] = c
		c.sess = ss
		c.cid = r.CID
		s.sessions[key] = ss
		s.byTSIH[tsih] = ss
		return tsih, LoginSuccess
	}

	s.mu.Lock()
	ss := s.byTSIH[r.TSIH]
	s.mu.Unlock()
	if ss == nil || ss.key != key {
		return 0, LoginSessionNotExist
	}
	if ss.typ == SessionDiscovery {
		return 0, LoginCantIncludeInSession
	}
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return 0, LoginSessionNotExist
	}
	old := ss.conns[r.CID]
	// While a connection is being replaced, the session must not end
	// because the old one was its last.
	ss.joining++
	ss.mu.Unlock()
	if old != nil {
		// Connection reinstatement: the old connection and its tasks go.
		c.log.Info("connection reinstatement", "cid", r.CID)
		old.close()
		old.waitDone(5 * time.Second)
	}
	ss.mu.Lock()
	ss.joining--
	st := LoginSuccess
	switch {
	case ss.ended:
		st = LoginSessionNotExist
	case ss.conns[r.CID] != nil:
		st = LoginCantIncludeInSession
	case uint32(len(ss.conns)) >= ss.params.MaxConnections:
		st = LoginTooManyConnections
	default:
		ss.conns[r.CID] = c
		c.sess = ss
		c.cid = r.CID
	}
	orphan := st != LoginSuccess && !ss.ended && len(ss.conns) == 0 && ss.joining == 0
	ss.mu.Unlock()
	if orphan {
		ss.end("connection reinstatement failed")
	}
	if st != LoginSuccess {
		return 0, st
	}
	return ss.tsih, LoginSuccess
}

// removeConn detaches c; the session ends with its last connection
// (error recovery level 0 keeps nothing for a later reconnect).
func (ss *session) removeConn(c *conn) {
	ss.mu.Lock()
	if ss.conns[c.cid] == c {
		delete(ss.conns, c.cid)
	}
	last := len(ss.conns) == 0 && ss.joining == 0
	ss.mu.Unlock()
	// The connection's tasks die with it (ERL 0: no allegiance transfer).
	ss.abortTasks(func(t *task) bool { return t.conn == c }, nil)
	if last {
		ss.end("last connection closed")
	}
}

// terminate closes every connection of the session and ends it.
func (ss *session) terminate(reason string) {
	ss.mu.Lock()
	cs := make([]*conn, 0, len(ss.conns))
	for _, c := range ss.conns {
		cs = append(cs, c)
	}
	ss.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
	ss.end(reason)
}

// end aborts every task, tells the device the I_T nexus is gone and then
// forgets the session. It runs once; a concurrent caller waits until the
// first is done, so that a reinstating login never overlaps the device's
// nexus-loss handling of the session it replaces (same nexus name).
func (ss *session) end(reason string) {
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		<-ss.endDone
		return
	}
	ss.ended = true
	ss.endErr = reason
	ss.mu.Unlock()
	defer close(ss.endDone)
	ss.abortTasks(func(*task) bool { return true }, nil)
	ss.seq.reset()
	ss.loseNexus()
	s := ss.srv
	s.mu.Lock()
	if s.sessions[ss.key] == ss {
		delete(s.sessions, ss.key)
	}
	if s.byTSIH[ss.tsih] == ss {
		delete(s.byTSIH, ss.tsih)
	}
	s.mu.Unlock()
	s.log.Debug("session ended", "initiator", ss.key.initiator, "tsih", ss.tsih, "reason", reason)
}

// loseNexus tells the device, once, that the session's I_T nexus is gone.
func (ss *session) loseNexus() {
	ss.nexusOnce.Do(func() {
		if ss.tgt == nil {
			return
		}
		if nl, ok := ss.tgt.dev.(nexusLoser); ok {
			nl.NexusLost(ss.nexus)
		}
	})
}

// waitConns waits (at most d) until every connection has finished.
func (ss *session) waitConns(d time.Duration) {
	ss.mu.Lock()
	cs := make([]*conn, 0, len(ss.conns))
	for _, c := range ss.conns {
		cs = append(cs, c)
	}
	ss.mu.Unlock()
	deadline := time.Now().Add(d)
	for _, c := range cs {
		c.waitDone(time.Until(deadline))
	}
}

// addTask registers t under its ITT; false if a task with that ITT is
// already in progress.
func (ss *session) addTask(t *task) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ended {
		return false
	}
	if _, dup := ss.tasks[t.itt]; dup {
		return false
	}
	ss.tasks[t.itt] = t
	return true
}

func (ss *session) task(itt uint32) *task {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.tasks[itt]
}

func (ss *session) removeTask(t *task) {
	ss.mu.Lock()
	if ss.tasks[t.itt] == t {
		delete(ss.tasks, t.itt)
	}
	ss.mu.Unlock()
}

// abortTasks aborts every task for which match is true (except skip) and
// returns them; the caller may wait on their done channels.
func (ss *session) abortTasks(match func(*task) bool, skip *task) []*task {
	ss.mu.Lock()
	var ts []*task
	for _, t := range ss.tasks {
		if t != skip && match(t) {
			ts = append(ts, t)
		}
	}
	ss.mu.Unlock()
	for _, t := range ts {
		t.abort()
	}
	return ts
}
