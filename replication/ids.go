package replication

import "slices"

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
}

// IsInSync reports whether node is in the in-sync set.
func (v View) IsInSync(node NodeID) bool { return slices.Contains(v.InSync, node) }

// IsReplica reports whether node holds a copy.
func (v View) IsReplica(node NodeID) bool { return slices.Contains(v.Replicas, node) }

// Clone returns a deep copy.
func (v View) Clone() View {
	v.Replicas = slices.Clone(v.Replicas)
	v.InSync = slices.Clone(v.InSync)
	return v
}
