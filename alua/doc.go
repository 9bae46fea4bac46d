// Package alua computes and holds the ALUA (asymmetric logical unit
// access, SPC-4 5.15) state of a replicated LUN as one node reports it.
//
// Every node holding a copy of a LUN exposes it through its own target
// port group (ID: the node's portal group tag, the same on every node; one
// relative target port with the same number). The owner's group is
// Active/Optimized; every other copy's group is Standby, so a multipath
// initiator keeps a path to each copy and sends IO only to the owner. The
// owner's group reads Transitioning while a failover is under way (the
// owner is recorded down) and, on the owner itself, until its volume
// serves. Groups is a scsi.PortGroupState; Set reports a change, after
// which the caller raises ASYMMETRIC ACCESS STATE CHANGED on the LU.
//
// The package knows nothing of the cluster: the caller turns the committed
// state into Copies.
package alua
