package simnet

// Stats counts what a Network carried, for tests and reports. Counters
// (uint64) run from New; the other fields are the state at the call.
type Stats struct {
	Dials        uint64 // stream connection attempts
	DialsRefused uint64 // failed at once: nobody listened (ECONNREFUSED)
	DialsFailed  uint64 // gave up (timeout, cancel) while a cut, a pause or a full backlog held them
	DialsWaiting int    // dials held now
	Conns        int    // open connection ends (a connection has two; a crash or Close ends one)
	ConnsHeld    int    // connection directions with bytes held by a fault now (cut link, paused sender)
	ConnsReset   uint64 // connection ends that saw a reset
	Crashes      uint64

	BytesWritten   uint64 // taken by Write
	BytesDelivered uint64 // crossed the link
	BytesRead      uint64 // returned by Read
	BytesHeld      int    // written, not across now: held by a fault, or waiting for the reader's window
	BytesHeldFault int    // the part of BytesHeld held by a fault
	BytesDiscarded uint64 // written and never to be read: the reader closed, or a crash or reset dropped them

	DatagramsSent      uint64
	DatagramsDelivered uint64 // put in the receiver's queue
	DatagramsDropped   uint64 // cut link, paused sender, no socket, full queue, or queued on a closed socket
	DatagramsQueued    int    // queued, not read now
}

// Stats returns the counters and the current state.
func (n *Network) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.st
	for p := range n.pipes {
		held := p.held()
		s.BytesHeld += held
		if held > 0 && !p.rclosed && !n.flowing(p) {
			s.BytesHeldFault += held
			s.ConnsHeld++
		}
	}
	for _, h := range n.hosts {
		for _, pc := range h.packets {
			s.DatagramsQueued += len(pc.queue)
		}
	}
	return s
}
