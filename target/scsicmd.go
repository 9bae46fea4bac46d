package target

import (
	"context"
	"sync"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

// SCSI Command flags (RFC 7143 section 11.3.1).
const (
	cmdFinal = 0x80
	cmdRead  = 0x40
	cmdWrite = 0x20
	cmdAttr  = 0x07
)

// task is one SCSI command from receipt to its last response PDU. A
// write task collects Data-Out (immediate, unsolicited, then solicited
// by R2Ts) into buf; it executes once it has been delivered in CmdSN order
// and all its data is in.
//
// A task is live from receipt until it completes: its final response is
// handed to the writer (complete runs as the writer stamps it, so that the
// MaxCmdSN in that very PDU already counts the freed slot), or it is
// aborted, or its response is dropped with its connection. Completing
// frees its CmdSN window slot (or immediate slot) and its write budget.
type task struct {
	sess      *session
	conn      *conn
	itt       uint32
	cmdSN     uint32
	immediate bool
	rawLUN    uint64
	lun       uint64
	cdb       []byte
	attr      scsi.TaskAttr
	read      bool
	write     bool
	edtl      uint32

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	// budget is guarded by sess.budget.mu (admission.go).
	budget taskBudget
	// immSlot: the task holds one of its connection's immediate slots.
	immSlot bool

	mu sync.Mutex
	// Data-Out state (dataout.go).
	buf         []byte
	bufLimit    uint32 // buf never grows beyond the bytes reserved for it
	granted     bool   // the solicited part is reserved: R2Ts may go out
	got         uint32 // bytes received
	unsolGot    uint32 // next offset of immediate+unsolicited data
	unsolEnd    uint32 // unsolicited data may go up to here
	unsolDone   bool
	unsolDataSN uint32
	r2tNext     uint32 // next offset to solicit
	r2tSN       uint32
	r2ts        []*r2tState
	lastData    int64       // unix ns: receipt, last R2T sent, last Data-Out
	dataTimer   *time.Timer // armed while waiting for Data-Out
	// failed ends the task with failStatus (and failSense) instead of
	// executing it; failNow says not to wait for outstanding data first.
	failed     bool
	failStatus scsi.Status
	failSense  []byte
	failNow    bool

	delivered  bool // its turn in CmdSN order has come
	started    bool // handed to execution
	aborted    bool
	responding bool // its final response went to the writer: no abort now
	completed  bool // complete has run
}

// r2tState is one outstanding R2T.
type r2tState struct {
	ttt, offset, length uint32
	got                 uint32
	dataSN              uint32
}

// device is what the target needs of a SCSI target device; *scsi.Device
// implements it. Task management and nexus loss are optional (tmf.go).
type device interface {
	Execute(ctx context.Context, cmd *scsi.Command) *scsi.Response
	LUNs() []uint64
}

// dataOutSizer is an optional device capability: the number of Data-Out
// bytes the command in cdb transfers on lun (its SCSI-presented data
// transfer length), so that the transport can report write residuals
// against the Expected Data Transfer Length (RFC 7143 section 11.4.5.1)
// without decoding CDBs itself. ok is false when the device cannot tell.
type dataOutSizer interface {
	DataOutLength(lun uint64, cdb []byte) (n uint32, ok bool)
}

func senseOf(key scsi.SenseKey, asc scsi.ASC) []byte { return scsi.NewSense(key, asc).Fixed() }

var (
	senseInvalidCDB      = func() []byte { return senseOf(scsi.KeyIllegalRequest, scsi.ASCInvalidFieldInCDB) }
	senseDataPhaseError  = func() []byte { return senseOf(scsi.KeyAbortedCommand, scsi.ASC(0x4b00)) }
	senseCRCError        = func() []byte { return senseOf(scsi.KeyAbortedCommand, scsi.ASC(0x4705)) }
	senseInternalFailure = func() []byte { return senseOf(scsi.KeyHardwareError, scsi.ASCInternalTargetFailure) }
)

// handleSCSICommand starts a SCSI Command (RFC 7143 section 11.3).
func (c *conn) handleSCSICommand(p *PDU) {
	ss := c.sess
	flags := p.Flags()
	t := &task{
		sess:      ss,
		conn:      c,
		itt:       p.ITT(),
		cmdSN:     p.CmdSN(),
		immediate: p.Immediate(),
		rawLUN:    p.LUN(),
		lun:       decodeLUN(p.LUN()),
		cdb:       p.CDB(),
		attr:      taskAttr(flags & cmdAttr),
		read:      flags&cmdRead != 0,
		write:     flags&cmdWrite != 0,
		edtl:      p.ExpectedDataTransferLength(),
		done:      make(chan struct{}),
		lastData:  c.lastRecv.Load(),
	}
	final := flags&cmdFinal != 0
	imm := uint32(len(p.Data))

	// Protocol errors: Reject the PDU; a non-immediate command still
	// consumes its CmdSN, so that the window does not stall.
	protoErr := func(reason byte) {
		c.reject(reason, p)
		c.order(p, nil)
	}
	switch {
	case t.itt == ReservedTag:
		protoErr(rejectInvalidPDUField)
		return
	case imm > 0 && !t.write:
		protoErr(rejectProtocolError)
		return
	case imm > 0 && !ss.params.ImmediateData:
		protoErr(rejectProtocolError)
		return
	case imm > ss.params.FirstBurstLength || imm > t.edtl:
		protoErr(rejectProtocolError)
		return
	case !final && (!t.write || ss.params.InitialR2T):
		protoErr(rejectProtocolError)
		return
	}
	// A command outside the window is ignored before it costs anything
	// (order decides for good, should another connection race it).
	if !t.immediate && !ss.seq.inWindow(t.cmdSN) {
		c.ignored(p)
		return
	}

	t.ctx, t.cancel = context.WithCancel(context.Background())
	if t.immediate {
		if c.immTasks.Add(1) > maxImmediateTasks {
			c.immTasks.Add(-1)
			t.failWith(scsi.StatusTaskSetFull, nil)
		} else {
			t.immSlot = true
		}
	}
	switch {
	case t.failed:
	case t.read && t.write:
		t.fail(senseInvalidCDB(), true) // bidirectional commands are not supported
	case t.write && t.edtl > c.srv.cfg.MaxCommandData:
		t.fail(senseInvalidCDB(), true)
	case t.write:
		t.admitWrite(p.Data, final)
	}

	if !ss.addTask(t) {
		t.complete()
		t.cancel()
		protoErr(rejectProtocolError) // ITT already in use
		return
	}
	c.active.Add(1)
	c.tasksWG.Add(1)
	if !c.orderTask(p, t.deliver) {
		t.finish()
		return
	}
	if t.write {
		t.mu.Lock()
		r2ts := t.solicitLocked()
		t.watchDataLocked()
		t.mu.Unlock()
		for _, r := range r2ts {
			c.send(r, stampPeek)
		}
	}
}

// admitWrite sets up the Data-Out state of a write task whose command
// carried imm as immediate data and reserves its buffer in the session's
// budget; a task the budget cannot take fails with TASK SET FULL.
func (t *task) admitWrite(imm []byte, final bool) {
	n := uint32(len(imm))
	t.got, t.unsolGot = n, n
	t.unsolEnd, t.unsolDone = n, true
	if !final && t.edtl > 0 {
		t.unsolEnd = min(t.sess.params.FirstBurstLength, t.edtl)
		t.unsolDone = false
	}
	t.r2tNext = t.unsolEnd
	if t.edtl == 0 {
		t.granted = true
		return
	}
	switch t.sess.budget.admit(t, t.unsolEnd) {
	case admitFull:
		t.failWith(scsi.StatusTaskSetFull, nil)
		return
	case admitGranted:
		t.granted = true
		t.bufLimit = t.edtl
	case admitWaiting:
		t.bufLimit = t.unsolEnd
	}
	switch {
	case n == t.edtl:
		t.buf = imm // all data came as immediate data: no copy
	case n > 0:
		// The rest of the buffer is reserved, not yet allocated: it is
		// allocated when data comes (grow).
		t.buf = make([]byte, n, t.bufLimit)
		copy(t.buf, imm)
	}
}

func taskAttr(a byte) scsi.TaskAttr {
	switch a {
	case 0, 1: // untagged, simple
		return scsi.TaskSimple
	case 2:
		return scsi.TaskOrdered
	case 3:
		return scsi.TaskHeadOfQueue
	case 4:
		return scsi.TaskACA
	}
	return scsi.TaskSimple
}

// fail makes the task end with CHECK CONDITION and sense instead of
// executing. With now false it still waits for the data the initiator
// has been asked for (RFC 7143 section 7.8).
func (t *task) fail(sense []byte, now bool) {
	if !t.failed {
		t.failed, t.failStatus, t.failSense = true, scsi.StatusCheckCondition, sense
	}
	t.failNow = t.failNow || now
}

// failWith makes the task end at once with status (TASK SET FULL: SAM-5
// 5.3.1, the task set has no room for it) and no data. Data-Out still on
// its way for it is dropped as data for an unknown task.
func (t *task) failWith(status scsi.Status, sense []byte) {
	t.failed, t.failStatus, t.failSense, t.failNow = true, status, sense, true
}

// readyLocked reports whether the task can be started now.
func (t *task) readyLocked() bool {
	if !t.delivered || t.started || t.aborted {
		return false
	}
	if t.failed {
		return t.failNow || (t.unsolDone && len(t.r2ts) == 0)
	}
	return !t.write || t.got == t.edtl
}

// deliver is called when the task's turn has come: in CmdSN order, or at
// once for an immediate task. A non-immediate task that completed while it
// waited for its turn (aborted) frees its window slot now.
func (t *task) deliver() {
	t.mu.Lock()
	t.delivered = true
	if t.completed {
		t.mu.Unlock()
		if !t.immediate {
			t.sess.seq.release()
		}
		return
	}
	t.maybeStartLocked()
	t.mu.Unlock()
}

// maybeStartLocked starts execution if the task is ready.
func (t *task) maybeStartLocked() {
	if t.readyLocked() {
		t.started = true
		go t.execute()
	}
}

// execute runs the command and sends its response.
func (t *task) execute() {
	defer t.finish()
	if t.failed {
		t.respond(&scsi.Response{Status: t.failStatus, Sense: t.failSense})
		return
	}
	var dev device
	if t.sess.tgt != nil {
		dev = t.sess.tgt.dev
	}
	if dev == nil {
		t.respond(&scsi.Response{Status: scsi.StatusCheckCondition, Sense: senseInternalFailure()})
		return
	}
	cmd := &scsi.Command{
		Nexus: t.sess.nexus,
		LUN:   t.lun,
		CDB:   t.cdb,
		Attr:  t.attr,
		Tag:   t.itt,
	}
	if t.write {
		cmd.Data = t.buf
		cmd.DataOutLen = t.edtl
	}
	if t.read {
		cmd.DataInLen = t.edtl
	}
	resp := t.run(dev, cmd)
	if resp.Status == scsi.StatusTaskAborted {
		return // aborted by task management: no response (SAM-5 5.6)
	}
	t.respond(resp)
}

// run executes cmd, turning a panic or a nil response of the device into
// an internal target failure.
func (t *task) run(dev device, cmd *scsi.Command) (resp *scsi.Response) {
	defer func() {
		if r := recover(); r != nil {
			t.conn.log.Error("device panicked", "itt", t.itt, "panic", r)
			resp = &scsi.Response{Status: scsi.StatusCheckCondition, Sense: senseInternalFailure()}
		}
	}()
	resp = dev.Execute(t.ctx, cmd)
	if resp == nil {
		resp = &scsi.Response{Status: scsi.StatusCheckCondition, Sense: senseInternalFailure()}
	}
	return resp
}

// respond sends the response unless the task was aborted meanwhile.
func (t *task) respond(resp *scsi.Response) {
	t.mu.Lock()
	if t.aborted {
		t.mu.Unlock()
		return
	}
	t.responding = true
	t.mu.Unlock()
	// The initiator may reuse the ITT as soon as it has the response
	// (Linux does): the tag must be free before the response leaves,
	// or the next command with it is rejected as a duplicate.
	t.sess.removeTask(t)
	t.sendResult(resp)
}

// abort stops the task: a task not yet executing ends now; an executing
// one has its context cancelled and will send no response. Callers wait
// on t.done.
func (t *task) abort() {
	t.mu.Lock()
	if t.responding || t.aborted {
		t.mu.Unlock()
		return
	}
	t.aborted = true
	started := t.started
	t.mu.Unlock()
	if t.cancel != nil {
		t.cancel()
	}
	if !started {
		t.finish()
	}
}

// finish forgets the task; it runs once. A task whose final response went
// to the writer completes when the writer sends or drops it; any other
// completes here.
func (t *task) finish() {
	t.once.Do(func() {
		if t.cancel != nil {
			t.cancel()
		}
		t.sess.removeTask(t)
		t.mu.Lock()
		handedOff := t.responding
		t.mu.Unlock()
		if !handedOff {
			t.complete()
		}
		t.conn.active.Add(-1)
		close(t.done)
		t.conn.tasksWG.Done()
	})
}

// complete ends the task's claim on the session's limits, once: its window
// slot (a delivered non-immediate task; one still waiting for its turn
// frees it in deliver), its immediate slot, its write budget, which may
// let waiting writes solicit their data. It must be called without locks
// held.
func (t *task) complete() {
	t.mu.Lock()
	if t.completed {
		t.mu.Unlock()
		return
	}
	t.completed = true
	slot := t.delivered && !t.immediate
	if t.dataTimer != nil {
		t.dataTimer.Stop()
		t.dataTimer = nil
	}
	t.mu.Unlock()
	if slot {
		t.sess.seq.release()
	}
	if t.immSlot {
		t.conn.immTasks.Add(-1)
	}
	if t.write {
		for _, g := range t.sess.budget.release(t) {
			g.grant()
		}
	}
}
