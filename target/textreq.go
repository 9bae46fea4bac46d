package target

import (
	"strings"
	"sync"
)

// Text Request/Response flags (RFC 7143 section 11.10.1).
const (
	textFinal    = 0x80
	textContinue = 0x40
)

// maxTextRequest bounds an initiator's (continued) text request.
const maxTextRequest = 64 << 10

// textState is a text exchange in progress on a connection: a request
// still arriving in pieces (C bit), or a response still being fetched by
// the initiator (TTT).
type textState struct {
	mu  sync.Mutex
	itt uint32
	ttt uint32 // ReservedTag: none outstanding
	in  []byte
	out []byte // response not yet sent
}

// handleText runs a Text Request in CmdSN order.
func (c *conn) handleText(p *PDU) {
	c.order(p, func() { c.textRequest(p) })
}

func (c *conn) textRequest(p *PDU) {
	st := &c.text
	st.mu.Lock()
	defer st.mu.Unlock()

	if ttt := p.TTT(); ttt != ReservedTag {
		// The initiator continues an exchange with the TTT we gave it.
		if ttt != st.ttt || p.ITT() != st.itt {
			c.reject(rejectInvalidPDUField, p)
			return
		}
		if len(st.out) > 0 {
			c.sendTextPart(p) // it asks for the next part of our response
			return
		}
		// Otherwise it sends the next part of its request.
	} else {
		// A new exchange (RFC 7143 section 11.10.4): forget any other.
		st.in, st.out = nil, nil
	}
	st.itt, st.ttt = p.ITT(), ReservedTag
	if len(st.in)+len(p.Data) > maxTextRequest {
		st.in = nil
		c.reject(rejectProtocolError, p)
		return
	}
	st.in = append(st.in, p.Data...)
	if p.Flags()&textContinue != 0 {
		// More request text follows: acknowledge with an empty response.
		st.ttt = c.newTTT()
		r := c.textResponse(p, st.ttt, false)
		c.send(r, stampStatus)
		return
	}
	kvs, err := ParseText(st.in)
	st.in = nil
	if err != nil {
		c.reject(rejectProtocolError, p)
		return
	}
	var answer []KV
	for _, kv := range kvs {
		switch kv.Key {
		case "SendTargets":
			var own *targetEntry
			if c.sess.typ == SessionNormal {
				own = c.sess.tgt
			}
			visible := c.srv.sendTargetsEntries(c.sess.key.initiator, own, c.nc.LocalAddr(), c.nc.RemoteAddr())
			answer = append(answer, SendTargetsText(kv.Value, visible)...)
		default:
			answer = append(answer, KV{Key: kv.Key, Value: ffpKeyAnswer(kv.Key)})
		}
	}
	st.out = EncodeText(answer)
	c.sendTextPart(p)
}

// ffpKeyAnswer answers a key offered in full feature phase: the login-only
// keys of RFC 7143 section 13 cannot be renegotiated here, others are not
// understood.
func ffpKeyAnswer(key string) string {
	switch key {
	case "HeaderDigest", "DataDigest", "MaxConnections", "InitialR2T",
		"ImmediateData", "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait",
		"DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder",
		"DataSequenceInOrder", "ErrorRecoveryLevel", "SessionType", "TargetName",
		"InitiatorName", "AuthMethod", "OFMarker", "IFMarker", "OFMarkInt", "IFMarkInt",
		"MaxRecvDataSegmentLength", "TargetAlias", "InitiatorAlias", "TargetAddress",
		"TargetPortalGroupTag":
		return "Reject"
	}
	if strings.HasPrefix(key, "X-") || strings.HasPrefix(key, "X#") {
		return "NotUnderstood"
	}
	return "NotUnderstood"
}

// sendTextPart sends as much of the pending response as the initiator
// accepts; if some remains, the response has C set and a TTT for the
// initiator to come back with. st.mu is held.
func (c *conn) sendTextPart(req *PDU) {
	st := &c.text
	max := c.params.InitiatorMaxRecvDataSegmentLength
	if max == 0 {
		max = 8192
	}
	data := st.out
	more := uint32(len(data)) > max
	if more {
		data = data[:max]
		st.out = st.out[max:]
		st.ttt = c.newTTT()
	} else {
		st.out = nil
		st.ttt = ReservedTag
	}
	r := c.textResponse(req, st.ttt, !more)
	r.Data = data
	if more {
		r.BHS[1] |= textContinue
	}
	c.send(r, stampStatus)
}

func (c *conn) textResponse(req *PDU, ttt uint32, final bool) *PDU {
	r := NewPDU(OpTextResp)
	r.SetFinal(final)
	r.SetLUN(req.LUN())
	r.SetITT(req.ITT())
	r.SetTTT(ttt)
	return r
}
