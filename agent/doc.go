// Package agent is a running hatgt node: a cluster node (what "hatgt serve
// --node-id ID --bind IP" runs: New, Run), built from its dependencies so
// that several nodes can run in one test process (the models are consul's
// agent/ and nomad's client/); and a single node serving a config file
// ("serve --dev", "serve --config": StartSingle, ReloadFile on SIGHUP;
// single.go, single_reload.go).
//
//	a, err := agent.New(ctx, cfg, agent.Deps{}) // production dependencies
//	err = a.Run(ctx, 30*time.Second)            // until ctx ends or the node leaves
//
// An Agent wires together:
//
//   - a cluster.Node: the Raft member, membership, owner lease, failover
//     and the admin API (package cluster);
//   - the reconciler (reconcile.go, reconcile_repl.go): keeps the node's
//     iSCSI targets and LUNs equal to what the state machine says — every
//     target of the cluster, its ACL and CHAP, this node's portal group
//     tag; the backing file of every LUN placed here; a LUN with one copy
//     served by its owner; a replicated LUN exposed on every node with a
//     copy, Active/Optimized on the owner and Standby elsewhere, through a
//     switch backend (switch.go) that keeps the same SCSI LU across owner
//     changes;
//   - the replica host (replica.go): this node's replication.Mirror (one
//     copy per replicated LUN placed here, fenced at every committed
//     epoch), the owner replication.Volume of each replicated LUN this node
//     owns (opened in an epoch this node claimed through Raft), and a
//     control loop that resyncs copies whose node came back and deposes
//     every volume when the node loses its owner lease; it is also the
//     node's cluster.OwnerRelease (handover.go): a leave stops serving the
//     LUNs it owns through it before it hands them over;
//   - the preparer (prepare.go): the node's cluster.Preparer, which creates
//     and opens the backing store of a LUN about to be created with a copy
//     here (so that a LUN this node cannot hold is refused with the
//     reason), and removes the file it created when the create is
//     abandoned — never a file that was there before;
//   - the reporter (report.go): what each reconcile found of every copy
//     placed here (serving, standby, starting, or failed and why) goes into
//     the state as copy.report entries, for status; only what differs from
//     what the state holds, at most one report a second, and a new error
//     text of a copy still failing at most every 30 s;
//   - the iSCSI target (package target) on the node's portal.
//
// Deps replaces what a test must control: listeners, Raft's transport and
// stores, gossip's transport, the HTTP client between nodes, the clock,
// and the LUN stores (blockstore.Crash for power loss).
//
// # Invariants kept here
//
//   - A node serves a replicated LUN as its owner only through a Volume
//     opened in an epoch of its own, claimed through a committed Raft entry
//     that names it owner (invariant 4); a volume that was deposed is never
//     used again.
//   - Once a leave's StopServing returned, no command of the LUNs it named
//     is served here: every command of a replicated LU holds its copy's io
//     lock (read side) for its whole run, and StopServing deposes the
//     volume and then waits for that lock; no volume is opened (nor epoch
//     claimed) for them until ResumeServing.
//   - A replicated LUN's copy is the LUN's data followed by its identity
//     block (replication.CopyStore over the Store the node opened, of
//     BackingSize bytes): its generation must be the one Raft recorded
//     for this node (invariant 7). A copy that has none where one was
//     recorded (a disk replaced by a blank one, a file created again), or,
//     for a LUN from before identities, whose file had to be created again
//     on a node that held it, is lost: it refuses every request until a
//     full copy starts, its node records it out of sync, and it never
//     serves as owner. An owner whose volume refuses to open because its
//     copy is not the recorded one (replication.ErrWrongCopy: another
//     generation, a restored backup) marks it lost too and hands the LUN
//     over to another in-sync copy.
//   - A replicated LUN's file from before identities (exactly the LUN's
//     size) is grown by the identity block (EnsureBacking); without a
//     generation recorded, its owner names its own copy and the other
//     copies are compared in full (only the regions that differ are
//     copied) before they count as in sync again.
//   - The LUN identity (serial number, NAA designator) is derived from the
//     target name and LUN number only, so every node and every restart
//     reports the same one (LUNIdentity).
package agent
