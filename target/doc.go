// Package target is hatgt's iSCSI target (RFC 7143): it accepts TCP
// connections, runs login, and in the full feature phase turns PDUs into
// SCSI commands for package scsi and their outcomes back into PDUs. It
// never interprets a CDB beyond the transfer length and direction that the
// SCSI Command PDU itself carries.
//
// Structure, one concern per file:
//
//   - server.go: Server, ServerConfig, targets, listeners, Shutdown.
//   - session.go: sessions keyed by (initiator, ISID, target), TSIH,
//     session and connection reinstatement, the I_T nexus.
//   - conn.go: one connection: a reader goroutine that decodes and
//     dispatches, a writer goroutine that stamps sequence numbers in wire
//     order and coalesces queued PDUs into one vectored write.
//   - cmdsn.go: the CmdSN window of a session; admission.go: the
//     bounds on immediate tasks and on write data buffers.
//   - scsicmd.go, dataout.go, datain.go: a SCSI task from command to
//     response: immediate, unsolicited and R2T-solicited data, Data-In
//     splitting, residuals. datapath.go reads Data-Out payloads straight
//     into their task's buffer.
//   - tmf.go, nop.go, textreq.go, logout.go, reject.go, lun.go: the other
//     full feature phase PDUs.
//   - pdu.go, login*.go, negotiate*.go, text.go, sendtargets.go: codec and
//     login phase.
//
// Invariants:
//
//   - StatSN is assigned by the writer, so StatSNs are in order on the
//     wire; ExpCmdSN and MaxCmdSN in every PDU are current when written.
//   - Non-immediate commands reach execution in CmdSN order across all
//     connections of a session; CmdSNs outside [ExpCmdSN, MaxCmdSN] are
//     ignored without answer.
//   - At most CmdWindow non-immediate SCSI tasks of a session are live
//     (received, not completed): MaxCmdSN = ExpCmdSN - 1 + CmdWindow -
//     (delivered tasks not completed), and it never decreases. A task
//     completes when the writer stamps its final response (so that PDU
//     already carries the slot it frees), when it is aborted, or when its
//     response is dropped with its connection. A connection has at most
//     one immediate SCSI task; another gets TASK SET FULL.
//   - A session's write data buffers stay within SessionWriteBudget:
//     CmdWindow × FirstBurstLength of it covers the data initiators may
//     send unasked; solicited data is granted from the rest, in arrival
//     order, before an R2T asks for it. A buffer is allocated as data
//     arrives, never beyond what was reserved for it.
//   - No write to a connection blocks longer than WriteTimeout, and no
//     task waits for Data-Out longer than DataOutTimeout: either drops
//     the connection, which aborts its tasks and frees their slots and
//     buffers.
//   - A task aborted by task management sends no response; the TMF
//     response goes out after every task it aborted is gone.
//   - Error recovery level 0: a broken data phase fails its task with
//     CHECK CONDITION; a header digest error or an oversized data segment
//     drops the connection; no input panics the server, and a failing
//     connection affects only its own session.
package target
