package scsi

// ReservationStore holds the persistent reservation state of one LU
// (registrations, the reservation, the generation counter, APTPL). On a
// single node it is in memory (NewMemoryReservationStore) or in a file
// (NewFileReservationStore, which keeps the state across a restart only
// when APTPL is set); in a cluster the Raft state machine backs it so
// every node answers the same.
//
// The contract is made of whole state transitions, so that a replicated
// implementation can order them:
//
//   - Load returns the current state. The result is a snapshot that the
//     caller must not modify; it stays valid (and unchanged) after later
//     Updates. Load is called on every command that passes the reservation
//     gate, so it must be cheap.
//   - Update atomically reads, modifies and writes the state: it calls fn
//     with a private deep copy of the current state; if fn returns nil, the
//     copy becomes the current state (durably, for a persistent store)
//     before Update returns nil. If fn returns an error, nothing changes and
//     Update returns that error unchanged (callers find *SenseError and
//     *StatusError with errors.As). fn may run more than once (a replicated
//     store may retry it against a newer state after a lost compare-and-
//     swap), so it must be deterministic given its argument and have no
//     effect other than on it.
//
// Errors other than fn's (I/O, no quorum) are returned as is; a store may
// return a *SenseError (e.g. NOT READY) to choose what the initiator sees.
// Implementations must be safe for concurrent use.
type ReservationStore interface {
	Load() (*PRState, error)
	Update(fn func(*PRState) error) error
}

// PowerLossPersister is an optional ReservationStore capability: a store
// that keeps the state through a power loss when the APTPL bit is set
// (SPC-4 5.13.5). Without it the device server reports PTPL_C=0 and
// refuses APTPL=1.
type PowerLossPersister interface {
	PersistsThroughPowerLoss() bool
}

// ReservationWatcher is an optional ReservationStore capability for a
// store shared by several nodes: Watch registers fn, which the store calls
// (in commit order, never concurrently) with every state committed by an
// Update on another node, so the LU can deliver that transition's Events
// (unit attentions, PREEMPT AND ABORT) to its own I_T nexuses. States
// committed through this store's own Update must not be passed to fn.
type ReservationWatcher interface {
	Watch(fn func(*PRState))
}

// ReservationSyncer is an optional ReservationStore capability for a store
// shared by several nodes whose Load may lag behind the latest commit:
// Sync returns once Load shows every change committed before it was
// called. PERSISTENT RESERVE IN calls it first (it is rare; the gate,
// on every command, does not). Its error is returned as is, like
// Update's.
type ReservationSyncer interface {
	Sync() error
}

// PortGroupState reports the asymmetric logical unit access (ALUA) state
// of the target port groups serving one LU (SPC-4 5.15). The device
// server calls AccessState on every command (it must be cheap, safe for
// concurrent use, and never block on the network) and PortGroups for
// REPORT TARGET PORT GROUPS. In a cluster each node is a target port group
// and the state comes from the Raft state machine; DefaultPortGroups is one
// Active/Optimized group.
//
// When the state of a group changes, the owner of the PortGroupState calls
// (*LU).PortGroupsChanged so that every I_T nexus gets the unit attention
// ASYMMETRIC ACCESS STATE CHANGED.
type PortGroupState interface {
	// AccessState returns the access state of target port group group.
	AccessState(group uint16) AccessState
	// PortGroups returns every target port group of the LU, in the order
	// REPORT TARGET PORT GROUPS lists them, as seen from nexus n (the
	// default implementation names the nexus's own group and port).
	PortGroups(n *Nexus) []TargetPortGroup
}

// ImplicitTransitionTimer is an optional PortGroupState capability: the
// IMPLICIT TRANSITION TIME (seconds, 0 = unspecified) reported in the
// extended header of REPORT TARGET PORT GROUPS.
type ImplicitTransitionTimer interface {
	ImplicitTransitionTime() uint8
}
