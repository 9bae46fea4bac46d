package scsi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
)

// DeviceConfig configures a SCSI target device.
type DeviceConfig struct {
	Logger *slog.Logger
}

// Device is a SCSI target device: the logical units one iSCSI target
// exposes, addressed by LUN. It routes commands to LUs, answers REPORT LUNS
// and commands to absent LUNs, and runs task management across all nexuses.
type Device struct {
	log   *slog.Logger
	table *opTable

	mu  sync.RWMutex
	lus map[uint64]*LU
}

// NewDevice returns an empty device.
func NewDevice(cfg DeviceConfig) *Device {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Device{log: cfg.Logger, table: newOpTable(), lus: map[uint64]*LU{}}
}

// AddLU exposes lu as lun (0..16383: peripheral or flat space addressing,
// as REPORT LUNS encodes it). Every I_T nexus of the device's other LUs
// gets REPORTED LUNS DATA HAS CHANGED (SPC-4 6.33, SAM-5 5.14): Linux
// rescans the target when it sees it, so a LUN added to a running target
// appears without a manual rescan.
func (d *Device) AddLU(lun uint64, lu *LU) error {
	if _, ok := encodeLUN(lun); !ok {
		return fmt.Errorf("scsi: LUN %d out of range 0..16383", lun)
	}
	if lu == nil {
		return fmt.Errorf("scsi: LUN %d: nil LU", lun)
	}
	d.mu.Lock()
	if _, ok := d.lus[lun]; ok {
		d.mu.Unlock()
		return fmt.Errorf("scsi: LUN %d already exists", lun)
	}
	d.lus[lun] = lu
	others := d.othersLocked(lu)
	d.mu.Unlock()
	lunsChanged(others)
	return nil
}

// RemoveLU stops exposing lun; the nexuses of the LUs left get REPORTED
// LUNS DATA HAS CHANGED.
func (d *Device) RemoveLU(lun uint64) {
	d.mu.Lock()
	lu, ok := d.lus[lun]
	delete(d.lus, lun)
	var others []*LU
	if ok {
		others = d.othersLocked(lu)
	}
	d.mu.Unlock()
	lunsChanged(others)
}

// othersLocked returns the device's LUs other than lu (d.mu held).
func (d *Device) othersLocked(lu *LU) []*LU {
	var out []*LU
	for _, o := range d.lus {
		if o != lu {
			out = append(out, o)
		}
	}
	return out
}

// lunsChanged tells every nexus of lus that the LUN inventory changed.
func lunsChanged(lus []*LU) {
	for _, lu := range lus {
		lu.addUAAll("", ASCReportedLUNsDataChanged)
	}
}

// LUNs returns the exposed LUNs in ascending order.
func (d *Device) LUNs() []uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]uint64, 0, len(d.lus))
	for l := range d.lus {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (d *Device) lu(lun uint64) *LU {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.lus[lun]
}

// Execute runs one command to completion and returns its response. It is
// safe to call concurrently; ctx cancellation, or a task management
// function, aborts the command: the response is then TASK ABORTED and the
// transport sends none.
func (d *Device) Execute(ctx context.Context, cmd *Command) *Response {
	n := cmd.Nexus
	if n == nil {
		n = &Nexus{}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	t := &task{ctx: ctx, dev: d, cmd: cmd, cdb: cmd.CDB, lu: d.lu(cmd.LUN), nexus: n}
	if t.lu == nil {
		return toResponse(t, d.runAbsent(t))
	}
	t.lu.noteNexus(n)
	ok := t.lu.tasks.enter(t)
	var err error
	if ok {
		err = d.run(t)
	}
	if aborted := t.lu.tasks.leave(t.entry); aborted || !ok {
		return &Response{Status: StatusTaskAborted}
	}
	return toResponse(t, err)
}

// run passes t through the gate chain and executes it. A handler that
// panics fails only its own command (INTERNAL TARGET FAILURE, logged with
// the stack), not the node.
func (d *Device) run(t *task) (err error) {
	defer func() {
		if p := recover(); p != nil {
			d.log.Error("scsi: handler panic", "cdb", fmt.Sprintf("%x", t.cdb), "panic", p, "stack", string(debug.Stack()))
			t.data = nil
			err = NewSense(KeyHardwareError, ASCInternalTargetFailure)
		}
	}()
	op, err := d.decode(t)
	if err != nil {
		return err
	}
	if err := t.lu.gates(t); err != nil {
		return err
	}
	return op.fn(t)
}

// runAbsent answers a command addressed to a LUN that does not exist
// (SPC-4 4.6.1 / SAM-5 5.9.2): INQUIRY reports peripheral qualifier 011b,
// REPORT LUNS works, REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED as
// parameter data, everything else ends with that sense.
func (d *Device) runAbsent(t *task) error {
	op, err := d.decode(t)
	if err != nil {
		return err
	}
	switch op.opcode {
	case opInquiry, opReportLUNs:
		return op.fn(t)
	case opRequestSense:
		return requestSenseAbsent(t)
	}
	return NewSense(KeyIllegalRequest, ASCLUNotSupported)
}

func (t *opTable) lookup(cdb []byte) *opInfo {
	k := opKey{opcode: cdb[0]}
	if t.withSA[cdb[0]] {
		k.sa = serviceAction(cdb)
	}
	return t.byKey[k]
}

// serviceAction extracts the service action of a CDB whose opcode has one.
func serviceAction(cdb []byte) uint16 {
	if cdb[0] == 0x7f && len(cdb) >= 10 {
		return uint16(cdb[8])<<8 | uint16(cdb[9])
	}
	if len(cdb) < 2 {
		return 0
	}
	return uint16(cdb[1] & 0x1f)
}

// toResponse turns a handler's result into the response: GOOD with
// Data-In, CHECK CONDITION with sense data (descriptor format when the
// control mode page has D_SENSE=1, fixed format otherwise), or another
// status.
func toResponse(t *task, err error) *Response {
	if err == nil {
		return &Response{Status: StatusGood, Data: t.data}
	}
	var se *SenseError
	if errors.As(err, &se) {
		return &Response{Status: StatusCheckCondition, Sense: t.lu.senseBytes(se), Data: t.data}
	}
	var st *StatusError
	if errors.As(err, &st) {
		return &Response{Status: st.Status}
	}
	t.dev.log.Error("command failed", "cdb", fmt.Sprintf("%x", t.cdb), "err", err)
	return &Response{Status: StatusCheckCondition, Sense: t.lu.senseBytes(NewSense(KeyHardwareError, ASCInternalTargetFailure))}
}

// senseBytes formats se as the LU's control mode page asks (D_SENSE). A
// nil LU (absent LUN) uses fixed format.
func (lu *LU) senseBytes(se *SenseError) []byte {
	if lu != nil && lu.mode.descriptorSense() {
		return se.Descriptor()
	}
	return se.Fixed()
}

// DataOutLength returns how many Data-Out bytes the command in cdb
// transfers on lun according to its CDB (the SCSI-presented data transfer
// length), so that the transport can report write residuals against its
// expected data transfer length without decoding CDBs. ok is false when
// the LUN is absent or the command is not one whose length is known here.
func (d *Device) DataOutLength(lun uint64, cdb []byte) (n uint32, ok bool) {
	lu := d.lu(lun)
	if lu == nil || len(cdb) == 0 {
		return 0, false
	}
	op := d.table.lookup(cdb)
	if op == nil || len(cdb) < op.cdbLen {
		return 0, false
	}
	cdb = cdb[:op.cdbLen]
	blocks := func(nb uint64) (uint32, bool) {
		b := nb << lu.shift
		if b > 0xffffffff {
			return 0xffffffff, true
		}
		return uint32(b), true
	}
	switch op.opcode {
	case opWrite6, opWrite10, opWrite12, opWrite16, opWriteVerify10, opWriteVerify12, opWriteVerify16:
		return blocks(decodeBlockCDB(cdb).blocks)
	case opVerify10, opVerify12, opVerify16:
		b := decodeBlockCDB(cdb)
		switch (b.byte1 >> 1) & 3 {
		case 1:
			return blocks(b.blocks)
		case 3:
			if b.blocks == 0 {
				return 0, true
			}
			return blocks(1)
		}
		return 0, true
	case opModeSelect6:
		return uint32(cdb[4]), true
	case opModeSelect10:
		return uint32(be16(cdb[7:])), true
	case 0x89: // COMPARE AND WRITE: verify and write data
		return blocks(2 * uint64(cdb[13]))
	case 0x8b, 0x9c: // ORWRITE(16), WRITE ATOMIC(16)
		if op.opcode == 0x9c {
			return blocks(uint64(be16(cdb[12:])))
		}
		return blocks(uint64(be32(cdb[10:])))
	case 0x41, 0x93: // WRITE SAME (10/16): one block unless NDOB
		if cdb[1]&0x01 != 0 {
			return 0, true
		}
		return blocks(1)
	case 0x42: // UNMAP
		return uint32(be16(cdb[7:])), true
	case 0x5f: // PERSISTENT RESERVE OUT
		return be32(cdb[5:]), true
	case 0x83: // EXTENDED COPY
		return be32(cdb[10:]), true
	case 0x48: // SANITIZE
		return uint32(be16(cdb[7:])), true
	}
	return 0, false
}
