package target

import (
	"bufio"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// stamp says which sequence numbers the writer puts into an outgoing PDU.
// Every target PDU gets ExpCmdSN and MaxCmdSN as they are when it is
// written; StatSN is assigned in wire order, so that it is always in
// sequence on the connection.
type stamp uint8

const (
	// stampWindow: ExpCmdSN/MaxCmdSN only (Data-In without status).
	stampWindow stamp = iota
	// stampPeek: StatSN is the next StatSN, not consumed (R2T, NOP-In
	// pings, RFC 7143 sections 11.8.3 and 11.19.3).
	stampPeek
	// stampStatus: StatSN is assigned and advanced (responses).
	stampStatus
)

// outPDU is one PDU queued for the writer; after, when set, runs once it
// has been written (or dropped because the connection closed). release,
// when set, runs just before the PDU is stamped (or when it is dropped):
// a task's final response completes the task there, so that the MaxCmdSN
// it carries already counts the window slot it frees, while responses
// queued behind an initiator that does not read keep their slots.
type outPDU struct {
	p       *PDU
	st      stamp
	after   func()
	release func()
}

// conn is one iSCSI connection. Its reader goroutine reads and dispatches
// PDUs; each SCSI command runs in a goroutine of its own. Outgoing PDUs go
// through one queue drained by whoever holds the "writing" role, which
// stamps them (StatSN in wire order) and writes everything queued in one
// vectored write: a command goroutine that finds nobody writing writes its
// own response at once (no hand-off to another goroutine: this is what QD1
// latency is made of), while PDUs queued meanwhile by others ride along in
// the same write. The reader goroutine never writes itself, so that a full
// socket buffer can never stop it reading: it hands the role to the
// writer goroutine.
type conn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader
	log *slog.Logger

	// Set by login (bindSession) before the full feature phase starts.
	sess    *session
	cid     uint16
	params  ConnParams
	digests Digests

	closed    chan struct{}
	closeOnce sync.Once
	done      chan struct{} // serve has returned
	writerEnd chan struct{}
	kick      chan struct{} // wakes the writer goroutine (capacity 1)

	wmu     sync.Mutex
	wq      []outPDU // queued, not yet written
	writing bool     // someone holds the writing role

	// Owned by the holder of the writing role.
	statSN uint32
	wspare []outPDU
	whdr   []byte
	wvec   net.Buffers

	active   atomic.Int32   // tasks in progress
	immTasks atomic.Int32   // immediate tasks holding a slot (admission.go)
	tasksWG  sync.WaitGroup // the same, to wait for
	ffp      atomic.Bool    // in full feature phase
	lastRecv atomic.Int64   // unix nanoseconds of the last PDU read
	nextTTT  atomic.Uint32

	ping struct {
		sync.Mutex
		outstanding bool
		ttt         uint32
		sent        time.Time
	}
	text textState
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv:       s,
		nc:        nc,
		br:        bufio.NewReaderSize(nc, 64<<10),
		log:       s.log.With("remote", nc.RemoteAddr().String()),
		kick:      make(chan struct{}, 1),
		closed:    make(chan struct{}),
		done:      make(chan struct{}),
		writerEnd: make(chan struct{}),
	}
	c.touch()
	return c
}

// close tears the connection down; safe to call many times from anywhere.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.nc.Close()
	})
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// waitDone waits at most d for serve to return.
func (c *conn) waitDone(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
}

func (c *conn) touch() { c.lastRecv.Store(time.Now().UnixNano()) }

// newTTT returns a Target Transfer Tag, never the reserved value.
func (c *conn) newTTT() uint32 {
	for {
		v := c.nextTTT.Add(1)
		if v != ReservedTag {
			return v
		}
	}
}

// send queues p for the writer. It returns false if the connection is
// closed (the PDU is dropped).
func (c *conn) send(p *PDU, st stamp) bool { return c.sendAfter(p, st, nil) }

// sendAfter queues p for the writer goroutine; after, when set, runs once
// p has been written or dropped. It never writes to the socket itself, so
// the reader goroutine may call it.
func (c *conn) sendAfter(p *PDU, st stamp, after func()) bool {
	return c.enqueue(false, outPDU{p: p, st: st, after: after})
}

// sendNow queues os and, when nobody is writing, writes them (and whatever
// else is queued) from the calling goroutine. Only command goroutines use
// it, never the reader.
func (c *conn) sendNow(os ...outPDU) bool { return c.enqueue(true, os...) }

func (c *conn) enqueue(inline bool, os ...outPDU) bool {
	c.wmu.Lock()
	if c.isClosed() {
		c.wmu.Unlock()
		runAfter(os)
		return false
	}
	c.wq = append(c.wq, os...)
	if c.writing {
		c.wmu.Unlock()
		return true
	}
	c.writing = true
	c.wmu.Unlock()
	if inline {
		c.flush()
		return true
	}
	select {
	case c.kick <- struct{}{}:
	default: // already kicked
	}
	return true
}

// flush writes queued PDUs until the queue is empty, then gives up the
// writing role. Only the holder of the role calls it.
func (c *conn) flush() {
	for {
		c.wmu.Lock()
		if len(c.wq) == 0 || c.isClosed() {
			c.writing = false
			rest := c.wq
			c.wq = nil
			c.wmu.Unlock()
			runAfter(rest)
			return
		}
		batch := c.wq
		c.wq = c.wspare[:0]
		c.wmu.Unlock()

		c.whdr, c.wvec = c.whdr[:0], c.wvec[:0]
		for i := range batch {
			o := &batch[i]
			if o.release != nil {
				o.release()
				o.release = nil
			}
			c.stamp(*o)
			c.whdr, c.wvec = c.appendWire(c.whdr, c.wvec, o.p)
		}
		bufs := c.wvec
		// An initiator that stops reading must not hold this goroutine,
		// and the tasks whose responses wait here, forever.
		c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
		_, err := bufs.WriteTo(c.nc)
		runAfter(batch)
		clear(batch)
		c.wspare = batch[:0]
		if err != nil {
			if !c.isClosed() {
				if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
					c.log.Warn("initiator has not read for WriteTimeout; dropping the connection", "write_timeout", c.srv.cfg.WriteTimeout)
				} else {
					c.log.Info("write failed", "err", err)
				}
			}
			c.close()
		}
	}
}

// runAfter runs the hooks of PDUs written or dropped.
func runAfter(os []outPDU) {
	for _, o := range os {
		if o.release != nil {
			o.release()
		}
		if o.after != nil {
			o.after()
		}
	}
}

// serve runs the connection: login, then the full feature phase.
func (c *conn) serve() {
	defer close(c.done)
	defer c.close()
	statSN, ok := c.login()
	if !ok {
		if c.sess != nil {
			c.sess.removeConn(c)
		}
		return
	}
	c.fullFeature(statSN)
}

// fullFeature runs the full feature phase until the connection ends, then
// detaches it from its session.
func (c *conn) fullFeature(statSN uint32) {
	c.statSN = statSN
	if c.params.InitiatorMaxRecvDataSegmentLength == 0 {
		c.params.InitiatorMaxRecvDataSegmentLength = 8192
	}
	if c.params.TargetMaxRecvDataSegmentLength == 0 {
		c.params.TargetMaxRecvDataSegmentLength = c.srv.cfg.MaxRecvDataSegmentLength
	}
	c.digests = Digests{Header: c.params.HeaderDigest, Data: c.params.DataDigest}
	go c.writeLoop()
	c.ffp.Store(true)
	if c.srv.cfg.NopInInterval > 0 {
		go c.pingLoop()
	}
	c.readLoop()
	c.close()
	c.sess.removeConn(c)
	<-c.writerEnd
	// Commands already executing finish (their responses are dropped)
	// before the connection counts as gone, so that Shutdown never
	// returns with a command still inside a device.
	c.tasksWG.Wait()
}

// login runs the login phase (digests off) and returns the StatSN the
// full feature phase continues from.
func (c *conn) login() (uint32, bool) {
	cfg := &c.srv.cfg
	c.nc.SetDeadline(time.Now().Add(cfg.LoginTimeout))
	defer c.nc.SetDeadline(time.Time{})
	lp := newLoginPhase(loginEnv{c})
	maxData := max(8192, cfg.MaxRecvDataSegmentLength)
	for {
		p, err := ReadPDU(c.br, Digests{}, maxData)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.log.Debug("login read failed", "err", err)
			}
			return 0, false
		}
		if p.Opcode() != OpLoginReq {
			c.log.Info("non-login PDU during login", "op", p.Opcode())
			return 0, false
		}
		resp, done, err := c.loginStep(lp, p)
		if resp != nil {
			if _, werr := c.nc.Write(resp.Encode(Digests{})); werr != nil {
				return 0, false
			}
		}
		if err != nil {
			c.logLoginFailure(lp, err)
			return 0, false
		}
		if !done {
			continue
		}
		res := lp.result()
		if res == nil || c.sess == nil {
			c.log.Error("login finished without a session")
			return 0, false
		}
		c.params = res.Conn
		next := res.NextStatSN
		if next == 0 && resp != nil {
			next = resp.StatSN() + 1
		}
		c.log = c.log.With("initiator", res.InitiatorName, "tsih", c.sess.tsih, "cid", c.cid)
		typ := "normal"
		if res.SessionType == SessionDiscovery {
			typ = "discovery"
		}
		c.log.Info("login complete", "type", typ)
		return next, true
	}
}

// logLoginFailure logs why a login failed. A failed authentication is a
// warning that names the initiator and the CHAP user name it gave (never
// a secret, challenge or response), so that an operator can tell a
// misconfigured initiator from someone guessing.
func (c *conn) logLoginFailure(lp *loginPhase, err error) {
	var le *LoginError
	if errors.As(err, &le) && le.Status == LoginAuthFailed {
		user := ""
		if lp.chap != nil {
			user = lp.chap.user
		}
		c.log.Warn("login failed: authentication", "initiator", lp.res.InitiatorName, "user", user, "err", err)
		return
	}
	c.log.Info("login failed", "err", err)
}

// loginStep calls the login state machine, turning a panic in it into a
// failed login so that one bad initiator cannot take the server down.
func (c *conn) loginStep(lp *loginPhase, p *PDU) (resp *PDU, done bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("login phase panicked", "panic", r)
			resp, done, err = nil, false, errors.New("target: login phase failed")
		}
	}()
	return lp.handle(p)
}

// readLoop reads PDUs until the connection fails or closes.
func (c *conn) readLoop() {
	for {
		p, err := c.readPDU()
		if err != nil {
			if errors.Is(err, ErrDataDigest) && p != nil {
				c.touch()
				c.dataDigestError(p)
				continue
			}
			if !c.isClosed() && !errors.Is(err, io.EOF) {
				c.log.Info("connection dropped", "err", err)
			}
			return
		}
		c.touch()
		c.dispatch(p)
		if c.isClosed() {
			return
		}
	}
}

// dispatch hands one PDU to its handler. It runs on the reader goroutine
// and never blocks on command execution.
func (c *conn) dispatch(p *PDU) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("PDU handler panicked; closing connection", "op", p.Opcode(), "panic", r, "stack", string(debug.Stack()))
			c.close()
		}
	}()
	op := p.Opcode()
	if c.sess.typ == SessionDiscovery {
		switch op {
		case OpTextReq, OpNopOut, OpLogoutReq:
		default:
			c.reject(rejectProtocolError, p)
			return
		}
	}
	switch op {
	case OpNopOut:
		c.handleNopOut(p)
	case OpSCSICommand:
		c.handleSCSICommand(p)
	case OpTaskMgmtReq:
		c.handleTMF(p)
	case OpTextReq:
		c.handleText(p)
	case OpDataOut:
		c.handleDataOut(p, false)
	case OpLogoutReq:
		c.handleLogout(p)
	case OpSNACKReq:
		// No SNACK support at ErrorRecoveryLevel 0.
		c.reject(rejectProtocolError, p)
	case OpLoginReq:
		c.reject(rejectProtocolError, p)
	default:
		c.reject(rejectCmdNotSupported, p)
	}
}

// dataDigestError handles a PDU whose data segment failed its digest (RFC
// 7143 section 7.8): Reject it; a Data-Out also fails its task.
func (c *conn) dataDigestError(p *PDU) {
	c.reject(rejectDataDigest, p)
	if p.Opcode() == OpDataOut {
		c.handleDataOut(p, true)
	}
}

// order delivers a command in CmdSN order (immediate commands at once).
// It returns false when the command was ignored because its CmdSN is
// outside the window.
func (c *conn) order(p *PDU, fn func()) bool {
	if p.Immediate() {
		if fn != nil {
			fn()
		}
		return true
	}
	if !c.sess.seq.submit(p.CmdSN(), fn) {
		c.ignored(p)
		return false
	}
	return true
}

// orderTask is order for a SCSI task: a non-immediate one holds its window
// slot until it completes.
func (c *conn) orderTask(p *PDU, fn func()) bool {
	if p.Immediate() {
		fn()
		return true
	}
	if !c.sess.seq.submitTask(p.CmdSN(), fn) {
		c.ignored(p)
		return false
	}
	return true
}

// ignored notes a command ignored because its CmdSN is outside the window
// (or a duplicate): RFC 7143 section 4.2.2.1 wants no answer.
func (c *conn) ignored(p *PDU) {
	exp, max := c.sess.seq.window()
	c.log.Debug("CmdSN outside window; ignored", "op", p.Opcode(), "itt", p.ITT(), "cmdsn", p.CmdSN(), "exp", exp, "max", max)
}

// writeLoop takes the writing role when the reader (or another
// non-command goroutine) has queued PDUs, until the connection closes.
func (c *conn) writeLoop() {
	defer close(c.writerEnd)
	for {
		select {
		case <-c.kick:
			c.flush()
		case <-c.closed:
			c.wmu.Lock()
			rest := c.wq
			c.wq = nil
			c.wmu.Unlock()
			runAfter(rest)
			return
		}
	}
}

func (c *conn) stamp(o outPDU) {
	exp, max := c.sess.seq.window()
	o.p.SetExpCmdSN(exp)
	o.p.SetMaxCmdSN(max)
	switch o.st {
	case stampPeek:
		o.p.SetStatSN(c.statSN)
	case stampStatus:
		o.p.SetStatSN(c.statSN)
		c.statSN++
	}
}

var zeroPad [4]byte

// appendWire adds the wire form of p to a vectored write: the header (and
// its digest) is copied into hdr, the data segment is referenced, not
// copied.
func (c *conn) appendWire(hdr []byte, vec net.Buffers, p *PDU) ([]byte, net.Buffers) {
	ahsLen := pad4(len(p.AHS))
	p.BHS[4] = byte(ahsLen / 4)
	dl := len(p.Data)
	p.BHS[5], p.BHS[6], p.BHS[7] = byte(dl>>16), byte(dl>>8), byte(dl)
	start := len(hdr)
	hdr = append(hdr, p.BHS[:]...)
	hdr = append(hdr, p.AHS...)
	hdr = append(hdr, zeroPad[:ahsLen-len(p.AHS)]...)
	if c.digests.Header {
		hdr = appendLE32(hdr, CRC32C(hdr[start:]))
	}
	vec = append(vec, hdr[start:len(hdr):len(hdr)])
	if dl == 0 {
		return hdr, vec
	}
	vec = append(vec, p.Data)
	padN := pad4(dl) - dl
	if padN == 0 && !c.digests.Data {
		return hdr, vec
	}
	start = len(hdr)
	hdr = append(hdr, zeroPad[:padN]...)
	if c.digests.Data {
		crc := crc32.Update(CRC32C(p.Data), castagnoli, zeroPad[:padN])
		hdr = appendLE32(hdr, crc)
	}
	vec = append(vec, hdr[start:len(hdr):len(hdr)])
	return hdr, vec
}

func appendLE32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}

// loginEnv is the LoginEnv of one connection.
type loginEnv struct{ c *conn }

func (e loginEnv) LookupTarget(name string) (*LoginTarget, bool) {
	te := e.c.srv.lookupTarget(name)
	if te == nil {
		return nil, false
	}
	return te.loginTarget(), true
}

func (e loginEnv) BindSession(r *LoginResult) (uint16, LoginStatus) {
	return e.c.srv.bindSession(e.c, r)
}

func (e loginEnv) Defaults() (SessionParams, ConnParams) {
	cfg := &e.c.srv.cfg
	return SessionParams{
			MaxConnections:       cfg.MaxConnections,
			InitialR2T:           cfg.InitialR2T,
			ImmediateData:        !cfg.DisableImmediateData,
			MaxBurstLength:       cfg.MaxBurstLength,
			FirstBurstLength:     cfg.FirstBurstLength,
			DefaultTime2Wait:     cfg.DefaultTime2Wait,
			DefaultTime2Retain:   cfg.DefaultTime2Retain,
			MaxOutstandingR2T:    cfg.MaxOutstandingR2T,
			DataPDUInOrder:       true,
			DataSequenceInOrder:  true,
			ErrorRecoveryLevel:   0,
			TargetPortalGroupTag: 1,
			CmdSNWindow:          cfg.CmdWindow,
		}, ConnParams{
			HeaderDigest:                      true,
			DataDigest:                        true,
			TargetMaxRecvDataSegmentLength:    cfg.MaxRecvDataSegmentLength,
			InitiatorMaxRecvDataSegmentLength: 8192,
		}
}
