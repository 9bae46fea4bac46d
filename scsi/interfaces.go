package scsi

// ReservationStore holds the persistent reservation state of one LU. On a
// single node it is in memory (and persisted for APTPL); in a cluster it is
// backed by the Raft state machine so every node answers the same.
// Defined and documented in pr.go by its owner.
type ReservationStore interface{}

// PortGroupState reports the ALUA state of target port groups for one LU.
// Defined and documented in alua.go by its owner.
type PortGroupState interface{}
