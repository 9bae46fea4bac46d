// Package scsi is the device server of hatgt: logical units that decode
// CDBs once, pass every command through one gate chain (unit attention,
// ALUA access state, reservations) and execute SPC-4/SBC-3 commands against
// a Backend volume.
//
// scsi never sees a transport PDU: the transport (package target) hands it
// a Command with the Data-Out already collected and gets back a Response.
// It imports only the standard library (and x/sys), so the cluster can wrap
// the two seams it exposes - the reservation store and the port-group state
// - without scsi knowing about Raft.
//
// # Life of a command
//
// Device.Execute routes a Command by LUN. A LUN with no LU answers only
// INQUIRY (peripheral qualifier 011b), REPORT LUNS and REQUEST SENSE
// (LOGICAL UNIT NOT SUPPORTED); everything else ends with that sense. On
// an LU the command becomes a task in the LU's task set (taskset.go),
// waits there as its task attribute requires (SIMPLE behind older ORDERED
// tasks, ORDERED behind every older task, HEAD OF QUEUE not at all), then
// passes decode (opcode table lookup, CDB length, service action, NACA)
// and the gate chain (gates.go): pending unit attention, sanitize in
// progress, ALUA access state, reservation, write protection. Only then
// does the handler from the opcode table run. Its error becomes the
// response in one place (toResponse): a *SenseError is CHECK CONDITION
// with fixed or - when the control mode page says D_SENSE - descriptor
// format sense data; a *StatusError is its status.
//
// # Invariants
//
//   - The opcode table (table.go, assembled from each area's list) is the
//     only place that says which commands exist, how long their CDBs are,
//     and how the gates treat them; REPORT SUPPORTED OPERATION CODES reads
//     the same table.
//   - Every command passes the same gate chain, in the same order, before
//     its handler; handlers never re-check unit attentions, reservations
//     or write protection.
//   - Data-In never exceeds a command's allocation length; the transport
//     truncates further to its expected length and reports residuals.
//   - A write never writes bytes the initiator did not send: an
//     overflowing write writes the whole blocks it received, a partial
//     block fails the command before anything is written.
//   - A task management function returns only after every task it aborted
//     has left the task set; an aborted task's response is TASK ABORTED,
//     which the transport does not send.
//   - Bad input never panics: it gets the standard sense (FuzzCDB).
package scsi
