package target

import (
	"fmt"
	"slices"

	"github.com/hatgt/hatgt/scsi"
)

// Task management function codes (RFC 7143 section 11.5.1).
const (
	tmfAbortTask        = 1
	tmfAbortTaskSet     = 2
	tmfClearACA         = 3
	tmfClearTaskSet     = 4
	tmfLUNReset         = 5
	tmfTargetWarmReset  = 6
	tmfTargetColdReset  = 7
	tmfTaskReassign     = 8
	offRefCmdSN         = 32
	offReferencedTaskTg = 20
)

// taskManager is the task management a device may offer; *scsi.Device is
// expected to implement it. Without it the target still aborts the tasks
// it holds (transport side) and answers from that alone.
type taskManager interface {
	AbortTask(n *scsi.Nexus, lun uint64, tag uint32) scsi.TMFResponse
	AbortTaskSet(n *scsi.Nexus, lun uint64) scsi.TMFResponse
	ClearTaskSet(n *scsi.Nexus, lun uint64) scsi.TMFResponse
	LUNReset(n *scsi.Nexus, lun uint64) scsi.TMFResponse
	TargetReset(n *scsi.Nexus) scsi.TMFResponse
}

// nexusLoser is implemented by devices that keep per-nexus state
// (reservations, unit attentions) and must hear when a session ends.
type nexusLoser interface {
	NexusLost(n *scsi.Nexus)
}

// handleTMF runs a Task Management Function Request in CmdSN order, on a
// goroutine of its own because it waits for the tasks it aborts.
func (c *conn) handleTMF(p *PDU) {
	c.order(p, func() { go c.runTMF(p) })
}

func (c *conn) runTMF(p *PDU) {
	ss := c.sess
	fn := p.Flags() & 0x7f
	lun := decodeLUN(p.LUN())
	tm, _ := ss.tgt.dev.(taskManager)
	resp := scsi.TMFComplete
	var after func()
	lunExists := func() bool { return slices.Contains(ss.tgt.dev.LUNs(), lun) }

	switch fn {
	case tmfAbortTask:
		rtt := p.U32(offReferencedTaskTg)
		t := ss.task(rtt)
		if t == nil || t.itt == p.ITT() {
			// RFC 7143 section 11.5.1 b) and c): a task never received
			// whose RefCmdSN is in the window counts as received.
			ref := p.U32(offRefCmdSN)
			if snLess(ref, p.CmdSN()) && ss.seq.consume(ref) {
				resp = scsi.TMFComplete
			} else {
				resp = scsi.TMFTaskNotExist
			}
			break
		}
		if tm != nil {
			tm.AbortTask(ss.nexus, t.lun, rtt)
		}
		t.abort()
		<-t.done
	case tmfAbortTaskSet, tmfClearTaskSet, tmfLUNReset:
		if !lunExists() {
			resp = scsi.TMFLUNNotExist
			break
		}
		onLUN := func(t *task) bool { return t.lun == lun }
		var ts []*task
		if fn == tmfAbortTaskSet {
			ts = ss.abortTasks(onLUN, nil)
		} else {
			ts = c.srv.abortTargetTasks(ss.tgt, onLUN)
		}
		if tm != nil {
			switch fn {
			case tmfAbortTaskSet:
				resp = tm.AbortTaskSet(ss.nexus, lun)
			case tmfClearTaskSet:
				resp = tm.ClearTaskSet(ss.nexus, lun)
			case tmfLUNReset:
				resp = tm.LUNReset(ss.nexus, lun)
			}
		}
		waitTasks(ts)
	case tmfTargetWarmReset, tmfTargetColdReset:
		ts := c.srv.abortTargetTasks(ss.tgt, func(*task) bool { return true })
		if tm != nil {
			resp = tm.TargetReset(ss.nexus)
		}
		waitTasks(ts)
		if fn == tmfTargetColdReset && resp == scsi.TMFComplete {
			// A cold reset also ends every session of the target, once
			// the initiator has its answer (RFC 7143 section 11.5.1).
			tgt := ss.tgt
			after = func() { go c.srv.terminateTargetSessions(tgt, "target cold reset") }
		}
	case tmfTaskReassign:
		resp = scsi.TMFReassignNotSupp // error recovery level 0
	case tmfClearACA:
		resp = scsi.TMFNotSupported
	default:
		resp = scsi.TMFRejected
	}

	// Task management is rare and always worth a line when diagnosing an
	// initiator's error handling.
	c.log.Info("task management", "function", tmfName(fn), "lun", lun,
		"referenced_itt", p.U32(offReferencedTaskTg), "response", int(resp))
	r := NewPDU(OpTaskMgmtResp)
	r.SetFinal(true)
	r.BHS[2] = byte(resp)
	r.SetITT(p.ITT())
	c.sendAfter(r, stampStatus, after)
}

func waitTasks(ts []*task) {
	for _, t := range ts {
		<-t.done
	}
}

// abortTargetTasks aborts the matching tasks of every session of tgt.
func (s *Server) abortTargetTasks(tgt *targetEntry, match func(*task) bool) []*task {
	var ts []*task
	for _, ss := range s.targetSessions(tgt) {
		ts = append(ts, ss.abortTasks(match, nil)...)
	}
	return ts
}

func (s *Server) targetSessions(tgt *targetEntry) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, ss := range s.sessions {
		if ss.tgt == tgt {
			out = append(out, ss)
		}
	}
	return out
}

func (s *Server) terminateTargetSessions(tgt *targetEntry, reason string) {
	for _, ss := range s.targetSessions(tgt) {
		ss.terminate(reason)
	}
}

// tmfName names a task management function code for logs.
func tmfName(fn byte) string {
	switch fn {
	case tmfAbortTask:
		return "ABORT TASK"
	case tmfAbortTaskSet:
		return "ABORT TASK SET"
	case tmfClearACA:
		return "CLEAR ACA"
	case tmfClearTaskSet:
		return "CLEAR TASK SET"
	case tmfLUNReset:
		return "LOGICAL UNIT RESET"
	case tmfTargetWarmReset:
		return "TARGET WARM RESET"
	case tmfTargetColdReset:
		return "TARGET COLD RESET"
	case tmfTaskReassign:
		return "TASK REASSIGN"
	}
	return fmt.Sprintf("function %d", fn)
}
