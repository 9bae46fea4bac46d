package scsi

import "sync"

// uaState keeps the unit attention conditions pending for each I_T nexus
// (SAM-5 5.14). A nexus the LU has never seen gets POWER ON, RESET, OR BUS
// DEVICE RESET OCCURRED first, as after a power on.
type uaState struct {
	mu      sync.Mutex
	seen    map[string]bool
	pending map[string][]ASC
}

// noteNexus registers n; the first time, it queues the power-on UA.
func (lu *LU) noteNexus(n *Nexus) {
	s := &lu.ua
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen, s.pending = map[string]bool{}, map[string][]ASC{}
	}
	k := n.Key()
	if !s.seen[k] {
		s.seen[k] = true
		s.pending[k] = append(s.pending[k], ASCPowerOnReset)
	}
}

// addUA queues asc for the nexus with key k.
func (lu *LU) addUA(k string, asc ASC) {
	s := &lu.ua
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.seen, s.pending = map[string]bool{}, map[string][]ASC{}
	}
	for _, a := range s.pending[k] {
		if a == asc {
			return
		}
	}
	s.pending[k] = append(s.pending[k], asc)
}

// addUAAll queues asc for every nexus the LU has seen except the one with
// key except ("" for none).
func (lu *LU) addUAAll(except string, asc ASC) {
	lu.ua.mu.Lock()
	keys := make([]string, 0, len(lu.ua.seen))
	for k := range lu.ua.seen {
		if k != except {
			keys = append(keys, k)
		}
	}
	lu.ua.mu.Unlock()
	for _, k := range keys {
		lu.addUA(k, asc)
	}
}

// takeUA removes and returns the oldest pending UA for nexus k.
func (lu *LU) takeUA(k string) (ASC, bool) {
	s := &lu.ua
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.pending[k]
	if len(q) == 0 {
		return 0, false
	}
	s.pending[k] = q[1:]
	return q[0], true
}

// clearUAOf removes a pending asc for nexus k (REPORT LUNS clears
// REPORTED LUNS DATA HAS CHANGED, SPC-4 6.33).
func (lu *LU) clearUAOf(k string, asc ASC) {
	s := &lu.ua
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.pending[k]
	for i, a := range q {
		if a == asc {
			s.pending[k] = append(q[:i:i], q[i+1:]...)
			return
		}
	}
}

// forgetNexus drops a nexus (I_T nexus loss is then reported by the
// transport calling addUA with ASCITNexusLoss if it wishes).
func (lu *LU) forgetNexus(k string) {
	s := &lu.ua
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.seen, k)
	delete(s.pending, k)
}
