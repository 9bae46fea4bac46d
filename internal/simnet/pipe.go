package simnet

import "bytes"

// pipe is one direction of a connection: the sender's send buffer and the
// receiver's receive buffer in one queue. Of the bytes written and not yet
// read, the first dlv have crossed the link (the receiver may read them);
// the rest are held at the sender, by a cut, a pause or a full Window.
// All fields are guarded by n.mu.
type pipe struct {
	src, dst *Host
	buf      bytes.Buffer
	dlv      int
	fin      bool // the writer closed: the reader gets EOF after the data
	finDlv   bool // the FIN crossed
	rclosed  bool // the reader closed: nothing crosses any more
	sig      signal
}

// held is how many bytes wait at the sender.
func (p *pipe) held() int { return p.buf.Len() - p.dlv }

// flowing reports whether bytes may cross now: the link is up and the
// sender is running. A paused receiver's kernel still takes bytes into
// its receive buffer; only its process does not read them.
func (n *Network) flowing(p *pipe) bool {
	return !p.src.paused && n.up(p.src, p.dst)
}

// advance moves held bytes (and then the FIN) across the link as far as
// the link and the receiver's Window allow. n.mu is held.
func (n *Network) advance(p *pipe) {
	if p.rclosed || !n.flowing(p) {
		return
	}
	if k := min(p.held(), n.cfg.Window-p.dlv); k > 0 {
		p.dlv += k
		n.st.BytesDelivered += uint64(k)
		p.sig.fire()
	}
	if p.fin && !p.finDlv && p.held() == 0 {
		p.finDlv = true
		p.sig.fire()
	}
}

// discard drops every byte of p, delivered or not (nobody will read
// them). n.mu is held.
func (n *Network) discard(p *pipe) {
	n.st.BytesDiscarded += uint64(p.buf.Len())
	p.buf.Reset()
	p.dlv = 0
	p.sig.fire()
}

// discardHeld drops the bytes of p that have not crossed (a crashed
// sender's kernel drops its send buffer); the receiver still has the
// rest. n.mu is held.
func (n *Network) discardHeld(p *pipe) {
	n.st.BytesDiscarded += uint64(p.held())
	p.buf.Truncate(p.dlv)
	p.sig.fire()
}
