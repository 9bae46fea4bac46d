// Package cluster is the control plane of a hatgt node: a Raft-replicated
// state machine (hashicorp/raft, raft-boltdb log and stable store, file
// snapshots, TCP transport) holding the cluster's nodes, targets, LUNs,
// ACLs and CHAP credentials; memberlist for membership and failure
// detection; and the HTTP/JSON admin API that the hatgt CLI talks to.
//
// # State machine
//
// Every change is a Command: {type, version, payload}. FSM.Apply is
// deterministic — it reads no clock, no randomness and no local disk — so
// every node that applies the same log holds the same State. Apply checks
// a command against the state and either applies all of it or nothing and
// returns a typed *Error (ErrTargetExists, ErrUnknownTarget, ErrLUNExists,
// ErrBadSize, ...; compare with errors.Is). Decisions that need more than
// the state, such as where the copies of a new LUN go (State.Place: alive
// nodes, fewest copies first), are taken by the leader before it proposes
// the command, and travel inside it. Snapshot writes the whole State as
// JSON; Restore replaces the whole state.
//
// Rules that entries already in a log were not held to are checked by the
// leader before it proposes, never by Apply (a replayed log must apply as
// it did): a new target's name is the config file's kind of name
// (config.CanonicalName), stored lower case, and refused when it differs
// from an existing one only in case; the API finds a target or initiator
// named in any case; a new LUN passes checkNewLUN (absolute, plain path;
// size a sector multiple; sector 512 or 4096) and checkReplicas (1 to the
// number of nodes, alive), and its path is not another LUN's on one of
// the same nodes.
//
// A new LUN (createLUN, on the leader, one at a time) gets its ID from the
// leader (the last ID plus one; Apply refuses an ID not past the last), so
// that the nodes of its placement can prepare its copy before the entry
// exists: each node's Preparer creates or opens the backing store, and
// the LUN is proposed only when every node could. Otherwise the create
// fails with ErrBacking, naming each node and its reason, and the nodes
// that did prepare abandon their copy (remove the file they created): a
// failed create leaves no LUN and no file.
//
// Every node reports whether it serves each copy placed on it
// (copy.report, CopiesReport: serving, standby, starting or failed, the
// last error, times from the reporting node's clock), on a change only;
// State.Reports keeps the last report per node and LUN ID. A report drops
// its node's records of LUNs no longer placed there; a node removed takes
// its records along; a node recorded alive again after being dead has its
// records marked stale (service unknown) until it reports anew.
//
// Invariants kept by Apply: a LUN's owner is in its placement and in its
// in-sync set when the LUN is created; an owner change (lun.set_owner) only
// picks a node of the in-sync set, is a compare-and-set on the epoch and
// bumps it; removing a node drops its copies and, if it owned a LUN, moves
// ownership to the first in-sync copy under a new epoch. Apply reads no
// clock, so the leader lets a removal of an owner reach the log only when
// the owner can no longer serve (invariant 5): a leaving node hands its
// LUNs over first, and a dead owner is removed only after its lease ran
// out (see Leave and removal below).
//
// # Replication coordinator
//
// Coordinator (NewCoordinator(node)) is the replication.Coordinator and
// replication.ProgressReporter of a node; a replication.LUNID is a LUN's
// ID, never reused. View reads this node's applied state. DropFromInSync
// and MarkInSync propose lun.set_in_sync, ReportProgress proposes
// lun.set_progress, each through Node.Apply and returning once committed;
// every one is a compare-and-set on the epoch and names the LUN ID, and a
// refusal for an old epoch or a LUN that is gone matches
// replication.ErrNotOwner. Progress reports are throttled to one per
// ProgressInterval per copy, except the first and the last (Done) of a
// run. Watch follows FSM.Subscribe, which is signalled after every applied
// command and every Restore, and delivers each view that differs from the
// last one delivered. The last progress record of each copy stays in the
// LUN (Resync) after the copy rejoins, and goes with the node when it
// leaves the placement. Status shows every copy of a LUN (LUNStatus.Copies):
// offline when its node is not recorded alive, else in-sync, resyncing
// (a run of the current epoch not done), or out-of-sync, with the resync
// percentage, the bytes the last resync copied, and rate and ETA while
// resyncing; and its service (CopyService: what its node reported, offline
// when the node is not alive, unknown before a report) with its last error.
// A LUN's service is its owner's (serving, starting, unknown) or
// not-served with the reason (LUNStatus.Problem); Status.Problems lists
// every LUN not served and every copy that failed.
//
// # Changes go through the leader
//
// Node.Apply (and AddNode, RemoveNode, Leave) run on the leader. A follower
// forwards the change to the leader's API (POST /v1/internal/forward, with
// the admin token); the leader prepares and proposes it. When no leader is
// reachable within Config.ApplyTimeout the caller gets ErrNoLeader,
// "no cluster leader: quorum lost? N of M voters reachable", never a hang.
// A forwarded command returns only once this node applied the entry the
// leader answered with (FSM.WaitApplied, bounded by the same timeout; past
// it only a warning is logged, the change standing): a read through the
// node that made a change sees it.
//
// # Membership and health
//
// memberlist carries each node's addresses as metadata (JSON of NodeInfo)
// and detects failures; gossip can be encrypted with Config.GossipKey. The
// leader turns what memberlist sees into node.health commands (level
// triggered: on events, on becoming leader, and periodically), so the
// recorded health converges after leader changes and missed events.
//
// # Leave and removal
//
// Node.Leave (hatgt leave, POST /v1/leave with LeaveOptions) hands the
// node's LUNs over before it leaves: it fails, naming the LUN and saying
// what to do, when a LUN it owns has no other in-sync copy on an alive
// node (unless Force: the LUN is then left without an owner, its data on
// this node only); it stops serving every LUN it owns through
// Config.Release (OwnerRelease, implemented by the agent: it returns once
// no IO of them is served here); it proposes lun.set_owner of each to its
// first such copy, a compare-and-set on the epoch, and waits for the
// commit; only then it leaves the Raft configuration and the state, then
// memberlist, and shuts down. A step that fails resumes serving and keeps
// the node a member. The leader refuses the leave of a node that still
// owns a LUN it could hand over.
//
// Node.RemoveNode (hatgt node remove, DELETE /v1/nodes/{id}) of a dead node
// that owns LUNs waits on the leader until the leader has seen the node
// out of reach for FailoverDelay (recorded dead or left, and its Raft
// heartbeats failing or no Raft server: the failover loop's test and
// clock), moves its LUNs through the failover path, then removes it. A
// wait that does not fit in the call (half of Config.ApplyTimeout is kept
// for the commits) answers ErrOwnerLease (HTTP 503) with the time to
// retry; hatgt node remove retries until its --timeout. remove.go and
// leave.go hold the details.
//
// # Admin API
//
// HTTP/JSON, on TCP (APIAddr) and on the unix socket DATA/hatgt.sock. GETs
// are open; every other call needs "Authorization: Bearer TOKEN" on TCP
// when Config.Token is set (401 otherwise); the socket needs none.
//
//	GET    /v1/status                         Status (no secrets)
//	GET    /v1/ping                           {"id": node ID}
//	GET    /v1/targets                        []TargetStatus
//	POST   /v1/targets                        TargetCreate
//	DELETE /v1/targets/{iqn}
//	POST   /v1/targets/{iqn}/luns             LUNRequest
//	DELETE /v1/targets/{iqn}/luns/{lun}
//	POST   /v1/targets/{iqn}/acl              {"initiator": NAME}
//	DELETE /v1/targets/{iqn}/acl/{initiator}
//	PUT    /v1/targets/{iqn}/chap             CHAP
//	DELETE /v1/targets/{iqn}/chap
//	POST   /v1/nodes                          NodeInfo: add a node (what a joiner asks)
//	DELETE /v1/nodes/{id}                     remove a dead node (owner_lease: retry later)
//	POST   /v1/join                           {"peer": API address}: this node joins
//	POST   /v1/leave                          LeaveOptions (or empty): this node hands its LUNs over, leaves and stops
//	POST   /v1/internal/forward               Op: a follower's change, run by the leader
//	POST   /v1/internal/prepare               PrepareRequest: prepare this node's copy of a new LUN
//	POST   /v1/internal/abandon               PrepareRequest: undo that prepare
//
// Errors are {"error": {"code", "message"}} with the codes of the *Error
// sentinels; Client turns them back into *Error.
//
// # Wiring (for the serve command)
//
//	cfg := cluster.DefaultConfig()
//	cfg.NodeID, cfg.DataDir = "n1", "/var/lib/hatgt"
//	cfg.RaftAddr, cfg.GossipAddr, cfg.APIAddr = "10.0.0.1:3271", "10.0.0.1:3272", "10.0.0.1:3270"
//	cfg.ISCSIPortal = "10.0.0.1:3260"
//	cfg.Bootstrap = true          // first node of a new cluster only
//	cfg.Token = token             // empty: keep the API on loopback
//	cfg.Reconciler = myReconciler // keeps local targets/LUNs = desired state
//	cfg.Release = myServingSide   // stops serving owned LUNs before a leave hands them over
//	cfg.Preparer = myPreparer     // creates a new LUN's copy before its commit
//	node, err := cluster.Start(ctx, cfg)
//	if err := cluster.CheckExposure(cfg.APIAddr, cfg.Token); err != nil { ... }
//	ln, _ := net.Listen("tcp", cfg.APIAddr)
//	go cluster.NewAPI(node).Serve(ctx, ln) // also serves DATA/hatgt.sock
//	// a new node joins through any member:
//	err = node.JoinVia(ctx, "10.0.0.2:3270")
//	<-node.Done() // closed after Shutdown or a Leave through the API
//
// The Reconciler is called with the node's Desired state (every target,
// with ACL and CHAP, and the LUNs placed on this node, each marked Owned or
// mirror) after every change and every ReconcileInterval; it creates
// backing files for the LUNs placed here, serves those owned here, and
// stops whatever is no longer desired.
//
// Secrets: CHAP secrets and the admin token never appear in logs, status
// or error messages; Status shows a set secret as "set".
package cluster
