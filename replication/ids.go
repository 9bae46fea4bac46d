package replication

import (
	"maps"
	"slices"
)

// NodeID names a cluster node (the cluster's Raft server ID).
type NodeID string

// LUNID names a replicated LUN cluster-wide.
type LUNID uint64

// View is what Raft has committed about one LUN: who owns it in which epoch,
// which nodes hold a copy, and which of those copies are complete.
type View struct {
	// Epoch increases by one with every change of owner. Every replicated
	// write carries it; mirrors refuse older ones.
	Epoch uint64
	// Owner serves the LUN in Epoch. It is always a member of InSync.
	Owner NodeID
	// Replicas are all nodes that hold (or should hold) a copy, the owner
	// included.
	Replicas []NodeID
	// InSync are the replicas whose copy has every acknowledged write.
	InSync []NodeID
	// Gens are the generations the cluster recorded for the copies
	// (invariant 7): a copy whose own generation differs, or that has
	// none, is not the copy the cluster recorded, and does not count as
	// in sync whatever InSync says. A replica missing from the map has
	// none recorded (a new copy before its first join, or a LUN from
	// before identities). Nil means the coordinator records no
	// identities: the owner then checks none (tests, and coordinators
	// written before identities).
	Gens map[NodeID]Generation
	// Fresh says the copies were created blank and no owner has
	// recorded their generations yet, so no write to the LUN was ever
	// acknowledged: the owner's Open gives its own copy and every in-sync
	// copy it reaches a new generation, without comparing them, and
	// records them (Coordinator.RecordGenerations) before it serves.
	Fresh bool
}

// IsInSync reports whether node is in the in-sync set.
func (v View) IsInSync(node NodeID) bool { return slices.Contains(v.InSync, node) }

// IsReplica reports whether node holds a copy.
func (v View) IsReplica(node NodeID) bool { return slices.Contains(v.Replicas, node) }

// Clone returns a deep copy.
func (v View) Clone() View {
	v.Replicas = slices.Clone(v.Replicas)
	v.InSync = slices.Clone(v.InSync)
	v.Gens = maps.Clone(v.Gens)
	return v
}
