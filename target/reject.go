package target

// Reject reasons (RFC 7143 section 11.17.1).
const (
	rejectDataDigest       byte = 0x02
	rejectSNACK            byte = 0x03
	rejectProtocolError    byte = 0x04
	rejectCmdNotSupported  byte = 0x05
	rejectImmediateCmd     byte = 0x06
	rejectTaskInProgress   byte = 0x07
	rejectInvalidDataAck   byte = 0x08
	rejectInvalidPDUField  byte = 0x09
	rejectOutOfResources   byte = 0x0a
	rejectWaitingForLogout byte = 0x0c
)

// newReject builds a Reject PDU for the PDU whose header is bhs. The data
// segment carries the complete header of the rejected PDU; ITT is the
// reserved tag; StatSN, ExpCmdSN and MaxCmdSN are stamped by the writer.
func newReject(reason byte, bhs *[BHSLen]byte) *PDU {
	p := NewPDU(OpReject)
	p.SetFinal(true)
	p.BHS[2] = reason
	p.SetITT(ReservedTag)
	p.Data = append([]byte(nil), bhs[:]...)
	return p
}

// reject queues a Reject for req on c.
func (c *conn) reject(reason byte, req *PDU) {
	c.log.Debug("reject", "op", req.Opcode(), "reason", reason, "itt", req.ITT())
	c.send(newReject(reason, &req.BHS), stampStatus)
}
