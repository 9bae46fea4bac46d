package scsi

import "context"

// task is one command in execution on a logical unit.
type task struct {
	ctx  context.Context
	dev  *Device
	lu   *LU
	cmd  *Command
	cdb  []byte
	op   *opInfo
	data []byte // Data-In produced by the handler

	nexus *Nexus   // never nil (an empty Nexus when the transport gave none)
	entry *tsEntry // the task's place in the LU's task set
}

// nexusKey names the task's I_T nexus.
func (t *task) nexusKey() string { return t.nexus.Key() }

// dataIn sets the Data-In of t to b truncated to the allocation length
// alloc (SPC-4 4.2.5.6: never return more than the initiator allocated).
func (t *task) dataIn(b []byte, alloc int) {
	if alloc < len(b) {
		b = b[:alloc]
	}
	t.data = b
}

// dataOutBlocks returns the Data-Out for a write of n blocks. When the
// initiator sent less (its expected transfer length was shorter than the
// CDB's transfer length: an overflow), only the whole blocks it sent are
// returned - the command writes those and no more, as FCP-4 and libiscsi's
// residual tests expect ("process the command normally except that data
// beyond the expected length shall not be transferred"); a trailing partial
// block fails the command with INVALID FIELD IN COMMAND INFORMATION UNIT
// before anything is written.
func (t *task) dataOutBlocks(n uint64) ([]byte, error) {
	lu := t.lu
	need := n << lu.shift
	have := uint64(len(t.cmd.Data))
	if have >= need {
		return t.cmd.Data[:need], nil
	}
	if have&(uint64(lu.cfg.BlockSize)-1) != 0 {
		return nil, NewSense(KeyIllegalRequest, ASCInvalidFieldInIU)
	}
	return t.cmd.Data[:have], nil
}

// dataOut returns the first n bytes of the Data-Out buffer, or INVALID
// FIELD IN COMMAND INFORMATION UNIT when the initiator sent fewer (its
// expected transfer length was shorter than the CDB asks for): the command
// then writes nothing, as FCP-4/iSCSI allow for an overflow.
func (t *task) dataOut(n int) ([]byte, error) {
	if len(t.cmd.Data) < n {
		return nil, NewSense(KeyIllegalRequest, ASCInvalidFieldInIU)
	}
	return t.cmd.Data[:n], nil
}
