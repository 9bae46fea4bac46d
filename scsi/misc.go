package scsi

import (
	"encoding/binary"
	"sync"
	"time"
)

// The remaining SBC-4 commands: SANITIZE (5.30), READ DEFECT DATA (10/12)
// (5.19, 5.20), PRE-FETCH (10/16) (5.10, 5.11), FORMAT UNIT (5.4) and
// WRITE LONG (10/16) (5.50, 5.51).
func miscCommands() []opInfo {
	sanitizeUsage := func(sa byte) []byte {
		return []byte{0x48, 0xa0 | sa, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x07}
	}
	return []opInfo{
		{name: "SANITIZE(OVERWRITE)", opcode: 0x48, sa: sanitizeOverwrite, hasSA: true, cdbLen: 10,
			usage: sanitizeUsage(sanitizeOverwrite), flags: opWrite, fn: sanitizeCmd},
		{name: "SANITIZE(BLOCK ERASE)", opcode: 0x48, sa: sanitizeBlockErase, hasSA: true, cdbLen: 10,
			usage: sanitizeUsage(sanitizeBlockErase), flags: opWrite, fn: sanitizeCmd},
		{name: "SANITIZE(EXIT FAILURE MODE)", opcode: 0x48, sa: sanitizeExitFailure, hasSA: true, cdbLen: 10,
			usage: sanitizeUsage(sanitizeExitFailure), flags: opWrite, fn: sanitizeCmd},
		{name: "READ DEFECT DATA(10)", opcode: 0x37, cdbLen: 10,
			usage: []byte{0x37, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x07},
			flags: opReadLike, fn: readDefectData10},
		{name: "READ DEFECT DATA(12)", opcode: 0xb7, cdbLen: 12,
			usage: []byte{0xb7, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07},
			flags: opReadLike, fn: readDefectData12},
		{name: "PRE-FETCH(10)", opcode: 0x34, cdbLen: 10,
			usage: []byte{0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07},
			flags: opReadLike, fn: preFetch10},
		{name: "PRE-FETCH(16)", opcode: 0x90, cdbLen: 16,
			usage: []byte{0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07},
			flags: opReadLike, fn: preFetch16},
		{name: "FORMAT UNIT", opcode: 0x04, cdbLen: 6,
			usage: []byte{0x04, 0x3f, 0x00, 0x00, 0x00, 0x07},
			flags: opWrite, fn: formatUnit},
		{name: "WRITE LONG(10)", opcode: 0x3f, cdbLen: 10,
			usage: []byte{0x3f, 0xe0, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x07},
			flags: opWrite, fn: writeLong10},
		{name: "WRITE LONG(16)", opcode: 0x9f, sa: 0x11, hasSA: true, cdbLen: 16,
			usage: []byte{0x9f, 0xf1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0xff, 0xff, 0x00, 0x07},
			flags: opWrite, fn: writeLong16},
	}
}

// needCDB returns INVALID FIELD IN CDB when the CDB is shorter than the
// command's length (the handlers index it directly).
func needCDB(t *task, n int) error {
	if len(t.cdb) < n {
		return InvalidCDBField(len(t.cdb), -1)
	}
	return nil
}

// needDataOut checks that the initiator sent exactly want bytes of
// Data-Out, as the CDB's length field at byte field implies: less is
// INVALID FIELD IN COMMAND INFORMATION UNIT (as task.dataOut), more means
// the CDB's length disagrees with the data and is an invalid CDB field.
func needDataOut(t *task, want uint64, field int) error {
	switch have := uint64(len(t.cmd.Data)); {
	case have < want:
		return NewSense(KeyIllegalRequest, ASCInvalidFieldInIU)
	case have > want:
		return InvalidCDBField(field, -1)
	}
	return nil
}

// misaligned reports whether v is not a multiple of unit (unit 0 or 1
// means no constraint).
func misaligned(v, unit uint64) bool { return unit > 1 && v%unit != 0 }

// SANITIZE service actions.
const (
	sanitizeOverwrite   = 0x01
	sanitizeBlockErase  = 0x02
	sanitizeExitFailure = 0x1f
)

// ascSanitizeFailed: MEDIUM ERROR, SANITIZE COMMAND FAILED (SBC-4 4.11.4).
const ascSanitizeFailed ASC = 0x3107

// sanitizeState tracks a SANITIZE of the LU. It lives in the LU's
// atomicState slot (lu.atomic.sanitize).
type sanitizeState struct {
	mu      sync.Mutex
	running bool // a sanitize operation is in progress
	// progress is the PROGRESS INDICATION (fraction done, in 65536ths)
	// reported with SANITIZE IN PROGRESS.
	progress uint16
	failed   bool // the last one failed: sanitize failure mode
}

// sanitizeGate refuses t while a sanitize operation is in progress (NOT
// READY, SANITIZE IN PROGRESS) except for the commands SBC-4 4.11.3 allows
// (INQUIRY, REPORT LUNS, REQUEST SENSE - those flagged opNoUA), and refuses
// medium access in sanitize failure mode (MEDIUM ERROR, SANITIZE COMMAND
// FAILED) until a sanitize succeeds or EXIT FAILURE MODE. It belongs in
// the gate chain after the unit attention gate.
func (lu *LU) sanitizeGate(t *task) error {
	s := &lu.atomic.sanitize
	s.mu.Lock()
	running, failed, progress := s.running, s.failed, s.progress
	s.mu.Unlock()
	if t.op != nil && t.op.flags&opNoUA != 0 {
		return nil
	}
	if running {
		return sanitizeInProgress(progress)
	}
	if failed && t.op != nil && t.op.flags&(opWrite|opReadLike) != 0 && t.op.opcode != 0x48 {
		return NewSense(KeyMediumError, ascSanitizeFailed)
	}
	return nil
}

func sanitizeInProgress(progress uint16) *SenseError {
	return &SenseError{Key: KeyNotReady, ASC: ASCLUNotReadySanitize, SKSV: true, FieldPointer: progress}
}

// sanitizeSense returns the sense REQUEST SENSE should report while a
// sanitize operation is in progress (NOT READY, SANITIZE IN PROGRESS with
// the progress indication, SBC-4 4.11.3), or nil when none is.
func (lu *LU) sanitizeSense() *SenseError {
	s := &lu.atomic.sanitize
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil
	}
	return sanitizeInProgress(s.progress)
}

// sanitizeCmd implements SANITIZE: OVERWRITE writes the initialization
// pattern over every block; BLOCK ERASE deallocates every block (thin LUs)
// or overwrites it with zeros; EXIT FAILURE MODE leaves sanitize failure
// mode. CRYPTOGRAPHIC ERASE is not supported. With IMMED the operation runs
// in the background and the LU is NOT READY, SANITIZE IN PROGRESS until it
// ends.
func sanitizeCmd(t *task) error {
	if err := needCDB(t, 10); err != nil {
		return err
	}
	cdb := t.cdb
	if cdb[1]&0x40 != 0 {
		return InvalidCDBField(1, 6)
	}
	for i := 2; i <= 6; i++ {
		if cdb[i] != 0 {
			return InvalidCDBField(i, -1)
		}
	}
	immed := cdb[1]&0x80 != 0
	sa := cdb[1] & 0x1f
	plen := int(binary.BigEndian.Uint16(cdb[7:]))
	lu := t.lu
	bs := int(lu.cfg.BlockSize)

	var op func() error
	switch sa {
	case sanitizeOverwrite:
		if plen <= 4 || plen > bs+4 {
			return InvalidCDBField(7, -1)
		}
		p, err := t.dataOut(plen)
		if err != nil {
			return err
		}
		if p[0]&0x1f == 0 { // OVERWRITE COUNT
			return InvalidParamField(0, 4)
		}
		if p[0]&0x60 != 0 { // TEST
			return InvalidParamField(0, 6)
		}
		ipl := int(binary.BigEndian.Uint16(p[2:]))
		if ipl == 0 || ipl > bs || ipl != plen-4 {
			return InvalidParamField(2, -1)
		}
		block := make([]byte, bs)
		for i := 0; i < bs; i += ipl {
			copy(block[i:], p[4:4+ipl])
		}
		if p[0]&0x80 != 0 && (p[0]&0x1f)%2 == 0 {
			// INVERT with an even count: the last pass writes the
			// inverted pattern.
			for i := range block {
				block[i] = ^block[i]
			}
		}
		op = func() error {
			unlock := lu.lockRange(0, lu.blocks)
			defer unlock()
			return lu.overwriteAll(block)
		}
	case sanitizeBlockErase:
		if plen != 0 {
			return InvalidCDBField(7, -1)
		}
		op = func() error {
			unlock := lu.lockRange(0, lu.blocks)
			defer unlock()
			if lu.thin() {
				return lu.unmapBlocks(0, lu.blocks)
			}
			return lu.overwriteAll(make([]byte, bs))
		}
	case sanitizeExitFailure:
		if plen != 0 {
			return InvalidCDBField(7, -1)
		}
		s := &lu.atomic.sanitize
		s.mu.Lock()
		s.failed = false
		s.mu.Unlock()
		return nil
	default:
		return InvalidCDBField(1, 4)
	}

	s := &lu.atomic.sanitize
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return NewSense(KeyNotReady, ASCLUNotReadySanitize)
	}
	s.running, s.progress = true, 0
	s.mu.Unlock()
	done := make(chan error, 1)
	// The operation runs apart from the task: neither a task abort nor a
	// reset stops a sanitize (SBC-4 4.11.3); the LU stays NOT READY,
	// SANITIZE IN PROGRESS until it ends.
	go func() {
		err := op()
		if err == nil {
			err = lu.flush()
		}
		s.mu.Lock()
		s.running, s.failed = false, err != nil
		s.mu.Unlock()
		if err != nil {
			lu.cfg.Logger.Error("sanitize failed", "err", err)
		}
		done <- err
	}()
	if immed {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-t.ctx.Done():
		return t.ctx.Err() // aborted: the transport sends no status
	}
}

// sanitizeSteps is how many parts an overwrite is split into to report
// progress.
const sanitizeSteps = 64

// overwriteAll writes block to every block of the LU (the caller holds the
// range lock), updating the sanitize progress indication as it goes.
func (lu *LU) overwriteAll(block []byte) error {
	s := &lu.atomic.sanitize
	step := max(lu.blocks/sanitizeSteps, 1)
	start := time.Now()
	for lba := uint64(0); lba < lu.blocks; lba += step {
		if err := lu.writeRepeated(block, lba, min(step, lu.blocks-lba)); err != nil {
			return err
		}
		if rate := lu.cfg.SanitizeRate; rate > 0 {
			// Pace to SanitizeRate: sleep until the bytes written so far
			// are due.
			due := time.Duration(float64((lba+step)<<lu.shift) / float64(rate) * float64(time.Second))
			if wait := due - time.Since(start); wait > 0 {
				time.Sleep(wait)
			}
		}
		s.mu.Lock()
		done := min(lba+step, lu.blocks)
		s.progress = uint16(float64(done) / float64(lu.blocks) * 65535)
		s.mu.Unlock()
	}
	return nil
}

// readDefectData10 implements READ DEFECT DATA (10): an empty defect list
// in the requested format.
func readDefectData10(t *task) error {
	if err := needCDB(t, 10); err != nil {
		return err
	}
	alloc := int(binary.BigEndian.Uint16(t.cdb[7:]))
	out := make([]byte, 4)
	out[1] = t.cdb[2] & 0x1f // PLISTV, GLISTV, DEFECT LIST FORMAT
	t.dataIn(out, alloc)
	return nil
}

// readDefectData12 implements READ DEFECT DATA (12).
func readDefectData12(t *task) error {
	if err := needCDB(t, 12); err != nil {
		return err
	}
	alloc := int(binary.BigEndian.Uint32(t.cdb[6:]))
	out := make([]byte, 8)
	out[1] = t.cdb[1] & 0x1f
	t.dataIn(out, alloc)
	return nil
}

// prefetchCacheBlocks is how many blocks PRE-FETCH reports fit "the cache"
// (the host page cache behind the backend): within it the answer is
// CONDITION MET, beyond it GOOD.
const prefetchCacheBlocks = 0x10000

func preFetch10(t *task) error {
	if err := needCDB(t, 10); err != nil {
		return err
	}
	lba := uint64(binary.BigEndian.Uint32(t.cdb[2:]))
	n := uint64(binary.BigEndian.Uint16(t.cdb[7:]))
	return preFetch(t, lba, n)
}

func preFetch16(t *task) error {
	if err := needCDB(t, 16); err != nil {
		return err
	}
	lba := binary.BigEndian.Uint64(t.cdb[2:])
	n := uint64(binary.BigEndian.Uint32(t.cdb[10:]))
	return preFetch(t, lba, n)
}

// preFetch implements PRE-FETCH: without IMMED the blocks are read (into
// the backend's cache) before status; the status is CONDITION MET when the
// range fits the cache, GOOD otherwise.
func preFetch(t *task, lba, n uint64) error {
	lu := t.lu
	if err := lu.checkRange(lba, n); err != nil {
		return err
	}
	if n > prefetchCacheBlocks {
		return nil
	}
	if t.cdb[1]&0x02 == 0 && n > 0 {
		per := max(uint64(writeSameChunk)>>lu.shift, 1)
		buf := make([]byte, min(n, per)<<lu.shift)
		for done := uint64(0); done < n; {
			c := min(n-done, per)
			if err := lu.readInto(buf[:c<<lu.shift], lba+done); err != nil {
				return err
			}
			done += c
		}
	}
	return &StatusError{Status: StatusConditionMet}
}

// formatUnit implements FORMAT UNIT as a validated no-op: the LU has no
// defect management or protection information to set up, and a virtual
// medium needs no low-level format. Only the defaults are accepted: no
// protection information, no defect list, no initialization pattern.
func formatUnit(t *task) error {
	if err := needCDB(t, 6); err != nil {
		return err
	}
	b1 := t.cdb[1]
	if b1&0xc0 != 0 { // FMTPINFO
		return InvalidCDBField(1, 7)
	}
	if b1&0x10 == 0 { // FMTDATA=0: no parameter list
		if b1&0x0f != 0 { // CMPLST / DEFECT LIST FORMAT need FMTDATA
			return InvalidCDBField(1, 3)
		}
		return nil
	}
	hlen := 4
	if b1&0x20 != 0 { // LONGLIST
		hlen = 8
	}
	p, err := t.dataOut(hlen)
	if err != nil {
		return err
	}
	if p[0]&0x07 != 0 { // PROTECTION FIELD USAGE
		return InvalidParamField(0, 2)
	}
	if p[1]&0x08 != 0 { // IP: initialization patterns not supported
		return InvalidParamField(1, 3)
	}
	var dll uint32
	if hlen == 8 {
		if p[3] != 0 { // P_I_INFORMATION / PROTECTION INTERVAL EXPONENT
			return InvalidParamField(3, -1)
		}
		dll = binary.BigEndian.Uint32(p[4:])
	} else {
		dll = uint32(binary.BigEndian.Uint16(p[2:]))
	}
	if dll != 0 { // no defect list to merge
		return InvalidParamField(hlen-2, -1)
	}
	return nil
}

func writeLong10(t *task) error {
	if err := needCDB(t, 10); err != nil {
		return err
	}
	lba := uint64(binary.BigEndian.Uint32(t.cdb[2:]))
	n := binary.BigEndian.Uint16(t.cdb[7:])
	return writeLong(t, lba, n, 7)
}

func writeLong16(t *task) error {
	if err := needCDB(t, 16); err != nil {
		return err
	}
	lba := binary.BigEndian.Uint64(t.cdb[2:])
	n := binary.BigEndian.Uint16(t.cdb[12:])
	return writeLong(t, lba, n, 12)
}

// writeLong implements WRITE LONG: a logical block has no ECC bytes here,
// so the long block is the logical block and WRITE LONG writes one block.
// Marking a block uncorrectable (WR_UNCOR), disabling correction (COR_DIS)
// and physical-block writes (PBLOCK, with one logical block per physical
// block) are not supported. A BYTE TRANSFER LENGTH other than the block
// size is an invalid field whose INFORMATION is the difference (requested
// minus actual, two's complement).
func writeLong(t *task, lba uint64, n uint16, nField int) error {
	switch b1 := t.cdb[1]; {
	case b1&0x40 != 0:
		return InvalidCDBField(1, 6)
	case b1&0x80 != 0:
		return InvalidCDBField(1, 7)
	case b1&0x20 != 0:
		return InvalidCDBField(1, 5)
	}
	lu := t.lu
	if err := lu.checkRange(lba, 1); err != nil {
		return err
	}
	if bs := uint32(lu.cfg.BlockSize); uint32(n) != bs {
		e := InvalidCDBField(nField, -1)
		e.Info, e.InfoValid = uint64(uint32(n)-bs), true
		return e
	}
	p, err := t.dataOut(int(n))
	if err != nil {
		return err
	}
	unlock := lu.lockRange(lba, 1)
	defer unlock()
	return lu.writeBlocks(p, lba, false)
}
