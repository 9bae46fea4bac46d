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
package scsi
