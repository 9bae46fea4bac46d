package target

import "time"

// solicitLocked issues R2Ts for data still to be solicited, keeping at
// most MaxOutstandingR2T outstanding, each for at most MaxBurstLength
// (RFC 7143 section 11.8). It returns the R2T PDUs to send. Solicitation
// starts once the unsolicited data has ended and the session's write
// budget has granted the solicited part (admission.go).
func (t *task) solicitLocked() []*PDU {
	if !t.write || !t.unsolDone || !t.granted || t.failed || t.aborted || t.started || t.completed {
		return nil
	}
	ss := t.sess
	var out []*PDU
	for uint32(len(t.r2ts)) < ss.params.MaxOutstandingR2T && t.r2tNext < t.edtl {
		n := min(t.edtl-t.r2tNext, ss.params.MaxBurstLength)
		r := &r2tState{ttt: t.conn.newTTT(), offset: t.r2tNext, length: n}
		t.r2ts = append(t.r2ts, r)
		p := NewPDU(OpR2T)
		p.SetFinal(true)
		p.SetLUN(t.rawLUN)
		p.SetITT(t.itt)
		p.SetTTT(r.ttt)
		p.SetDataSN(t.r2tSN)
		p.SetBufferOffset(r.offset)
		p.SetU32(offDesiredLen, n)
		t.r2tSN++
		t.r2tNext += n
		out = append(out, p)
	}
	if len(out) > 0 {
		t.lastData = time.Now().UnixNano()
	}
	return out
}

// grant is called once the session's budget has reserved the solicited
// part of t's buffer: its R2Ts may go out.
func (t *task) grant() {
	t.mu.Lock()
	t.granted = true
	t.bufLimit = t.edtl
	r2ts := t.solicitLocked()
	t.watchDataLocked()
	t.mu.Unlock()
	for _, r := range r2ts {
		t.conn.send(r, stampPeek)
	}
}

// handleDataOut files one Data-Out PDU (RFC 7143 section 11.7) into its
// task. With DataPDUInOrder and DataSequenceInOrder, every PDU of a
// sequence must continue exactly where the previous one ended, with the
// next DataSN; anything else fails the task with CHECK CONDITION, which
// is how error recovery level 0 ends a task with a broken data phase.
// badDigest marks a PDU whose data failed its digest: it counts for the
// sequence, its data is discarded and the task fails once all solicited
// data has arrived.
func (c *conn) handleDataOut(p *PDU, badDigest bool) {
	t := c.sess.task(p.ITT())
	if t == nil {
		// Data for a task that ended (aborted, failed): drop it.
		c.log.Debug("Data-Out for unknown task", "itt", p.ITT())
		return
	}
	if t.conn != c {
		c.reject(rejectProtocolError, p)
		return
	}
	t.mu.Lock()
	if !t.write || t.started || t.aborted || t.failNow || t.edtl == 0 {
		t.mu.Unlock()
		return
	}
	t.lastData = c.lastRecv.Load()
	// A failing task only follows the sequence: its data is not kept.
	ok := t.fileDataLocked(p, badDigest || t.failed)
	if !ok {
		t.fail(senseDataPhaseError(), true)
	} else if badDigest {
		t.fail(senseCRCError(), false)
	}
	r2ts := t.solicitLocked()
	t.watchDataLocked()
	t.maybeStartLocked()
	t.mu.Unlock()
	for _, r := range r2ts {
		c.send(r, stampPeek)
	}
}

// fileDataLocked checks p against the task's data state and copies its
// data unless discard is set. It returns false on a protocol violation.
func (t *task) fileDataLocked(p *PDU, discard bool) bool {
	off, n := p.BufferOffset(), uint32(len(p.Data))
	if ttt := p.TTT(); ttt == ReservedTag {
		// Unsolicited data (InitialR2T=No).
		if t.unsolDone || off != t.unsolGot || n > t.unsolEnd-off || p.DataSN() != t.unsolDataSN {
			return false
		}
		if !discard {
			t.put(off, p.Data)
		}
		t.unsolGot += n
		t.got += n
		t.unsolDataSN++
		if p.Final() {
			t.unsolDone = true
			t.r2tNext = t.unsolGot
		}
		return true
	}
	var r *r2tState
	idx := -1
	for i, x := range t.r2ts {
		if x.ttt == p.TTT() {
			r, idx = x, i
			break
		}
	}
	if r == nil || off != r.offset+r.got || n > r.length-r.got || p.DataSN() != r.dataSN {
		return false
	}
	if !discard {
		t.put(off, p.Data)
	}
	r.got += n
	t.got += n
	r.dataSN++
	if p.Final() {
		if r.got != r.length {
			return false
		}
		t.r2ts = append(t.r2ts[:idx], t.r2ts[idx+1:]...)
	}
	return true
}

// put copies data into the Data-Out buffer at off, growing it as needed
// (never beyond the Expected Data Transfer Length, which the callers have
// checked). Data read in place (readPDU) is already there.
func (t *task) put(off uint32, data []byte) {
	if len(data) == 0 {
		return
	}
	t.grow(int(off) + len(data))
	if &t.buf[off] != &data[0] {
		copy(t.buf[off:], data)
	}
}

// grow makes the Data-Out buffer at least end bytes long. The buffer is
// allocated when data first comes, with the capacity the budget reserved
// for it (bufLimit): a task waiting for data, or for its grant, costs no
// memory beyond what the initiator has sent. Callers keep end within
// bufLimit.
func (t *task) grow(end int) {
	if end <= len(t.buf) {
		return
	}
	if end > cap(t.buf) {
		nb := make([]byte, len(t.buf), max(end, int(t.bufLimit)))
		copy(nb, t.buf)
		t.buf = nb
	}
	t.buf = t.buf[:end]
}

// watchDataLocked arms the Data-Out timer when the task waits for data
// from the initiator: unsolicited data it announced, or data an R2T asked
// for. A task waiting for its budget grant waits for the target, not for
// the initiator.
func (t *task) watchDataLocked() {
	if t.dataTimer != nil || !t.waitingDataLocked() {
		return
	}
	t.dataTimer = time.AfterFunc(t.conn.srv.cfg.DataOutTimeout, t.checkDataOut)
}

func (t *task) waitingDataLocked() bool {
	return t.write && !t.started && !t.aborted && !t.completed && !t.failNow &&
		(!t.unsolDone || len(t.r2ts) > 0)
}

// checkDataOut runs when the Data-Out timer fires: if the task has waited
// for data for DataOutTimeout since the last Data-Out (or R2T), error
// recovery level 0 gives up on the connection; dropping it aborts its
// tasks and releases their buffers.
func (t *task) checkDataOut() {
	limit := t.conn.srv.cfg.DataOutTimeout
	t.mu.Lock()
	if !t.waitingDataLocked() {
		t.dataTimer = nil
		t.mu.Unlock()
		return
	}
	idle := time.Since(time.Unix(0, t.lastData))
	if idle < limit {
		t.dataTimer.Reset(limit - idle)
		t.mu.Unlock()
		return
	}
	t.dataTimer = nil
	got, unsolDone, r2ts := t.got, t.unsolDone, len(t.r2ts)
	t.mu.Unlock()
	t.conn.log.Warn("no Data-Out within DataOutTimeout; dropping the connection",
		"itt", t.itt, "cmdsn", t.cmdSN, "lun", t.lun, "received", got, "expected", t.edtl,
		"unsolicited_pending", !unsolDone, "r2ts_outstanding", r2ts, "waited", idle.Round(time.Millisecond))
	t.conn.close()
	t.abort()
}
