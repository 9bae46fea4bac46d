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
// has been written (or dropped because the connection closed).
type outPDU struct {
	p     *PDU
	st    stamp
	after func()
}

// Limits of one batched write.
const (
	maxBatchPDUs  = 64
	maxBatchBytes = 1 << 20
	outQueueLen   = 256
)

// conn is one iSCSI connection. Its reader goroutine reads and dispatches
// PDUs; its writer goroutine stamps and writes the PDUs that every other
// goroutine queues through send, coalescing whatever is queued into one
// write; each SCSI command runs in a goroutine of its own.
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

	out       chan outPDU
	closed    chan struct{}
	closeOnce sync.Once
	done      chan struct{} // serve has returned
	writerEnd chan struct{}

	statSN uint32 // writer goroutine only

	active   atomic.Int32   // tasks in progress
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
		out:       make(chan outPDU, outQueueLen),
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

func (c *conn) sendAfter(p *PDU, st stamp, after func()) bool {
	select {
	case c.out <- outPDU{p: p, st: st, after: after}:
		return true
	case <-c.closed:
		if after != nil {
			after()
		}
		return false
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
			c.log.Info("login failed", "err", err)
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
		exp, max := c.sess.seq.window()
		c.log.Debug("CmdSN outside window; ignored", "op", p.Opcode(), "cmdsn", p.CmdSN(), "exp", exp, "max", max)
		return false
	}
	return true
}

// writeLoop stamps and writes queued PDUs, as many per write as are queued.
func (c *conn) writeLoop() {
	defer close(c.writerEnd)
	batch := make([]outPDU, 0, maxBatchPDUs)
	hdr := make([]byte, 0, maxBatchPDUs*(BHSLen+8))
	vec := make(net.Buffers, 0, 3*maxBatchPDUs)
	for {
		select {
		case o := <-c.out:
			batch = append(batch, o)
		case <-c.closed:
			c.drainOut()
			return
		}
		size := batch[0].p.EncodedLen(c.digests)
	fill:
		for len(batch) < maxBatchPDUs && size < maxBatchBytes {
			select {
			case o := <-c.out:
				batch = append(batch, o)
				size += o.p.EncodedLen(c.digests)
			default:
				break fill
			}
		}
		hdr = hdr[:0]
		vec = vec[:0]
		for _, o := range batch {
			c.stamp(o)
			hdr, vec = c.appendWire(hdr, vec, o.p)
		}
		bufs := vec
		_, err := bufs.WriteTo(c.nc)
		for i := range batch {
			if batch[i].after != nil {
				batch[i].after()
			}
			batch[i] = outPDU{}
		}
		batch = batch[:0]
		if err != nil {
			if !c.isClosed() {
				c.log.Info("write failed", "err", err)
			}
			c.close()
			c.drainOut()
			return
		}
	}
}

// drainOut runs the after hooks of PDUs that will never be written.
func (c *conn) drainOut() {
	for {
		select {
		case o := <-c.out:
			if o.after != nil {
				o.after()
			}
		default:
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
