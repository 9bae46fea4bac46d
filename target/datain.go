package target

import (
	"encoding/binary"

	"github.com/hatgt/hatgt/scsi"
)

// Residual flags of SCSI Response and Data-In PDUs (RFC 7143 sections
// 11.4.1 and 11.7.1).
const (
	flagOverflow  = 0x04
	flagUnderflow = 0x02
	flagStatus    = 0x01 // Data-In S bit
)

// sendResult sends the outcome of a command: Data-In PDUs for read data,
// split at the initiator's MaxRecvDataSegmentLength and in sequences of
// MaxBurstLength, with GOOD status folded into the last one; otherwise a
// SCSI Response (with sense data for CHECK CONDITION). The PDU with the
// status completes the task (scsicmd.go) as the writer stamps it.
func (t *task) sendResult(resp *scsi.Response) {
	c := t.conn
	var data []byte
	var resFlags byte
	var residual uint32
	good := resp.Status == scsi.StatusGood || resp.Status == scsi.StatusConditionMet
	switch {
	case t.read:
		if good {
			data = resp.Data
		}
		if uint32(len(data)) > t.edtl || uint64(len(data)) > uint64(t.edtl) {
			residual = uint32(min(uint64(len(data))-uint64(t.edtl), 0xffffffff))
			resFlags = flagOverflow
			data = data[:t.edtl]
		} else if uint32(len(data)) < t.edtl {
			residual = t.edtl - uint32(len(data))
			resFlags = flagUnderflow
		}
	case t.write:
		want, known := t.got, false
		if sz, ok := t.sess.tgt.dev.(dataOutSizer); ok {
			want, known = sz.DataOutLength(t.lun, t.cdb)
		}
		if !known {
			want = t.got
		}
		switch {
		case want > t.edtl:
			residual, resFlags = want-t.edtl, flagOverflow
		case want < t.edtl:
			residual, resFlags = t.edtl-want, flagUnderflow
		}
	}

	foldStatus := good && len(data) > 0 && len(resp.Sense) == 0
	out := t.dataInPDUs(data, foldStatus, resp.Status, resFlags, residual)
	if foldStatus {
		out[len(out)-1].release = t.complete
		c.sendNow(out...)
		return
	}
	dataSN := uint32(len(out))
	p := NewPDU(OpSCSIResponse)
	p.SetFinal(true)
	p.BHS[1] |= resFlags
	p.BHS[2] = 0x00 // command completed at target
	p.BHS[3] = byte(resp.Status)
	p.SetITT(t.itt)
	p.SetTTT(0)         // SNACK Tag
	p.SetDataSN(dataSN) // ExpDataSN
	p.SetU32(offResidual, residual)
	if len(resp.Sense) > 0 {
		p.Data = make([]byte, 2+len(resp.Sense))
		binary.BigEndian.PutUint16(p.Data, uint16(len(resp.Sense)))
		copy(p.Data[2:], resp.Sense)
	}
	c.sendNow(append(out, outPDU{p: p, st: stampStatus, release: t.complete})...)
}

// dataInPDUs returns the Data-In PDUs for data. With withStatus the last
// one carries status and residual.
func (t *task) dataInPDUs(data []byte, withStatus bool, status scsi.Status, resFlags byte, residual uint32) []outPDU {
	c := t.conn
	seg := c.params.InitiatorMaxRecvDataSegmentLength
	burst := t.sess.params.MaxBurstLength
	if seg == 0 {
		seg = 8192
	}
	if burst == 0 {
		burst = seg
	}
	var dataSN uint32
	total := uint32(len(data))
	out := make([]outPDU, 0, (total+seg-1)/seg+1)
	for off := uint32(0); off < total; {
		seqEnd := min(off-off%burst+burst, total)
		end := min(off+seg, seqEnd)
		p := NewPDU(OpDataIn)
		p.SetITT(t.itt)
		p.SetTTT(ReservedTag)
		p.SetDataSN(dataSN)
		p.SetBufferOffset(off)
		p.Data = data[off:end]
		last := end == total
		if end == seqEnd {
			p.SetFinal(true)
		}
		st := stampWindow
		if last && withStatus {
			p.BHS[1] |= flagStatus | resFlags
			p.BHS[3] = byte(status)
			p.SetU32(offResidual, residual)
			st = stampStatus
		}
		out = append(out, outPDU{p: p, st: st})
		dataSN++
		off = end
	}
	return out
}
