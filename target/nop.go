package target

import "time"

// handleNopOut answers an initiator's ping (ITT set) with a NOP-In echoing
// its data, and takes a NOP-Out carrying a TTT as the answer to the
// target's own ping (RFC 7143 sections 11.18 and 11.19).
func (c *conn) handleNopOut(p *PDU) {
	if ttt := p.TTT(); ttt != ReservedTag {
		c.ping.Lock()
		if c.ping.outstanding && c.ping.ttt == ttt {
			c.ping.outstanding = false
		}
		c.ping.Unlock()
		return
	}
	if p.ITT() == ReservedTag {
		// A ping that asks for no answer; it must be immediate.
		if !p.Immediate() {
			c.reject(rejectProtocolError, p)
		}
		return
	}
	c.order(p, func() {
		r := NewPDU(OpNopIn)
		r.SetFinal(true)
		r.SetLUN(p.LUN())
		r.SetITT(p.ITT())
		r.SetTTT(ReservedTag)
		data := p.Data
		if max := c.params.InitiatorMaxRecvDataSegmentLength; max > 0 && uint32(len(data)) > max {
			data = data[:max]
		}
		r.Data = data
		c.send(r, stampStatus)
	})
}

// pingLoop pings a connection that has been silent for NopInInterval and
// drops it when the answer does not come within NopInTimeout.
func (c *conn) pingLoop() {
	interval, timeout := c.srv.cfg.NopInInterval, c.srv.cfg.NopInTimeout
	period := max(min(interval, timeout)/4, 5*time.Millisecond)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-c.closed:
			return
		case now := <-tick.C:
			c.ping.Lock()
			if c.ping.outstanding {
				late := now.Sub(c.ping.sent) >= timeout
				c.ping.Unlock()
				if late {
					c.log.Info("no answer to NOP-In; dropping connection")
					c.close()
					return
				}
				continue
			}
			if now.Sub(time.Unix(0, c.lastRecv.Load())) < interval {
				c.ping.Unlock()
				continue
			}
			c.ping.outstanding = true
			c.ping.sent = now
			c.ping.ttt = c.newTTT()
			ttt := c.ping.ttt
			c.ping.Unlock()
			p := NewPDU(OpNopIn)
			p.SetFinal(true)
			p.SetITT(ReservedTag)
			p.SetTTT(ttt)
			c.send(p, stampPeek)
		}
	}
}
