// Package replication mirrors a LUN synchronously across nodes.
//
// One node owns a LUN in an epoch and serves it through a Volume, a
// scsi.Backend over its local Store. The other copies live on Mirrors. The
// cluster decides who owns what through a Coordinator (Raft underneath);
// the data goes over a Transport (TCP, or in memory for tests). Data never
// goes through the Coordinator: it orders only the metadata that says who
// may write (owner, epoch) and whose copy is complete (the in-sync set).
//
// # Write path (owner)
//
//  1. The write takes a range lock on its bytes: a write that overlaps one
//     in flight waits until that one is acknowledged. So overlapping writes
//     are numbered, sent and applied in one order on every copy, while
//     disjoint writes go in parallel (up to Config.MaxInFlight).
//  2. It gets the next sequence numbers of the current epoch (one per
//     message; writes larger than Config.MaxMessage are split) and is sent
//     on each in-sync (and resyncing, and joining) mirror's connection,
//     while the owner writes its own copy.
//  3. It is acknowledged when every such mirror answered OK: after its
//     store took the write (write-back) or made it durable (write-through,
//     FUA). Flush sends a flush to every copy.
//  4. A mirror that errs or does not answer within Config.AckTimeout is
//     proposed for removal with Coordinator.DropFromInSync. Every write it
//     missed, and every later write, marks the mirror's dirty-region map
//     and waits for that commit before it is acknowledged. If the commit
//     fails the owner stops serving (ErrNotOwner).
//
// # A copy's state
//
// The owner's view of each other copy is one type, copyState
// (copystate.go): its phase (in-sync, dropping, out-of-sync, resyncing,
// joining, removed) with the connection the owner writes it on, its
// dirty-region map, the regions it took since its last flush, the drop or
// join being committed for it and its resync's flags. Only its named
// transitions change it (fail, listedInSync, dropCommitted, dropFailed,
// claimResync, startResync, caughtUp, joinCommitted, joinRefused,
// joinUnknown, removed, ...), and a transition refuses a phase it does
// not apply to. Its doc comment draws the state diagram, lists each
// transition's from-phases, to-phase and effects (the episode it opens or
// closes, what the dirty map gets) and states how it keeps invariants 1,
// 3, 6 and 8 for one copy; TestCopyStateTransitions checks every
// (phase, event) pair. The Volume does what a transition asks of it:
// commit the drop or join it opened, log, depose.
//
// # Invariants kept here (numbers of DESIGN.md)
//
//  1. An acknowledged write is on every member of the in-sync set Raft
//     recorded at the time: the owner waits for each member, and a member
//     leaves only through a committed drop (TestAckedWriteIsOnEveryInSyncCopy).
//     An in-sync change that fails with anything but ErrNotOwner may have
//     committed all the same (a timeout, a leader lost after the append):
//     after a MarkInSync of unknown outcome the owner stops sending to the
//     copy and drops it through the Coordinator (idempotent) before any
//     write the copy misses is acknowledged, or stops serving if the drop
//     does not commit (TestAmbiguousMarkInSyncDropsTheCopy,
//     TestAmbiguousMarkInSyncUndroppableDeposes, TestFailureWhileAmbiguousJoin).
//     A view that lists in sync a copy the owner does not replicate to is
//     not left so: the owner drops the copy the same way
//     (TestRaftListingAnOutOfSyncCopyIsDropped).
//  2. Only the owner of the current epoch gets writes acknowledged: a Mirror
//     refuses requests of an epoch older than the newest it has seen (from
//     a hello, a request, or Mirror.Fence) with StatusStaleEpoch; an owner
//     that receives it, or sees a newer epoch in the view, is deposed and
//     answers ErrNotOwner, which ErrorKind maps to BackendErrNotReady (the
//     ALUA transitioning sense) (TestMirrorRefusesStaleEpoch,
//     TestOldOwnerIsFenced, TestViewChangeDeposes). The newest epoch only
//     rises to epochs the cluster committed: with an EpochCheck
//     (Mirror.SetEpochCheck) a request of an epoch newer than any seen
//     that the node has not applied as committed is answered
//     StatusEpochUnknown and changes nothing, so a forged frame cannot
//     fence a copy against its real owner; an owner's hello retries it
//     for up to AckTimeout, as the node's state may trail the leader's
//     (TestMirrorRefusesUncommittedEpoch, TestOwnerHelloRetriesUntilEpochKnown).
//  3. A mirror leaves the in-sync set through a committed entry before any
//     write it missed is acknowledged (TestMissedWritesAckedAfterDropCommit,
//     TestDropFailureDeposesOwner, TestFailureWhileJoining).
//  6. A returning mirror is caught up from the dirty-region map, not by a
//     full copy, and rejoins only when identical (Volume.Resync;
//     TestResyncCopiesExactlyTheDirtyRegions, TestResyncWhileWriting).
//  7. A copy has an identity, a Generation kept in an identity block
//     after the LUN's data (CopyStore; the mirror reports it in every
//     hello reply) and recorded by the coordinator per copy (View.Gens).
//     The owner's own copy must hold the recorded one, or Open fails with
//     ErrWrongCopy and the volume never serves. An in-sync copy that
//     reports another, or none, is dropped through the coordinator at
//     Open like a failed copy, with every region dirty; a resync of a
//     copy that is not the one its dirty map describes becomes a full
//     copy. A full copy gives the copy a new generation at its start,
//     recorded with its join (MarkInSync); a fresh LUN's first owner
//     names every copy it reaches and records them before it serves
//     (RecordGenerations). Details in volume_identity.go
//     (TestSwappedBlankCopyGetsFullCopy, TestOpenDropsInSyncCopyThatIsNotRecorded,
//     TestOwnerWithWrongCopyDoesNotServe, TestFreshLUNRecordsGenerations).
//     A coordinator that records no identities (View.Gens nil) turns the
//     checks off.
//  8. What was sent to a copy counts as on it only once it is durable
//     there: a resync marks a region it sent (or found equal, perhaps in
//     the copy's cache only) copied, not clean, and clears it, in memory
//     and then on disk, only after a flush of the copy that followed the
//     copy's ack; a write that fails on the copy in between marks the
//     region again, which takes the copied mark away. A copy that loses
//     power before that flush gets those regions again
//     (TestResyncSurvivesMirrorPowerLoss,
//     TestResyncClearsRegionsAfterTheirFlush). Likewise the regions a
//     write-back copy took (writes, Repair's rewrites) since its last
//     completed flush join its dirty map when it fails
//     (TestFlushFailureMarksUnflushed, TestRepairedRegionIsUnflushedUntilFlush).
//
// Besides the epoch, a mirror checks sequence numbers: within an epoch each
// write or unmap must carry a number above the last it applied and above
// the floor of the owner's latest hello (the owner's counter when it opened
// that connection). A request that arrives late on an older connection —
// one the owner gave up on before resyncing the copy — is refused
// (StatusOutOfOrder) instead of overwriting newer data. So every
// Volume.Open needs an epoch of its own (ErrEpochReused otherwise).
//
// Invariants 4 (a new owner comes from the in-sync set and bumps the epoch
// before serving) and 5 (no ownership change without quorum; an owner cut
// off stops within its lease) are the cluster's: Volume.Open only checks
// that the committed view names this node as owner and greets the in-sync
// mirrors with the epoch before serving (and fences Config.LocalMirror,
// its own copy), which fences the previous owner on every copy the new one
// will wait for. For invariant 5 the cluster calls Volume.Depose when this
// node's lease runs out; a deposed volume serves neither reads nor writes
// and proposes no in-sync changes.
//
// # What the cluster provides
//
// A Coordinator (see its contract) that records copy generations, each
// copy as a CopyStore (the LUN's data, then its identity block, over any
// Store of the LUN's size plus IdentitySize), a Resolver from node to
// replication address for the TCPTransport, a TCPServer serving each
// node's Mirror.Handle, an EpochCheck on the Mirror (Mirror.SetEpochCheck) that
// reads the node's applied Raft state (the cluster's Coordinator.CheckEpoch),
// Mirror.AddLUN / Mirror.Follow for every copy the node holds, and a control loop that calls Volume.Resync (or ResyncAll) when
// an out-of-sync copy's node is reachable, and Depose on lease loss.
//
// # Dirty-region map
//
// A DirtyMap has one bit per Config.RegionSize bytes for each copy that is
// out of sync. A write a copy misses sets its bits before it is
// acknowledged, and the bits are durable (Config.StateDir) before the
// acknowledgement; concurrent writers share one persist, and a write whose
// bits are already on disk does not wait (DRBD's activity log does the same
// job with an extent LRU; a whole-bitmap rewrite is simpler and cheap at
// one bit per MiB). In write-back mode the owner also remembers, in memory,
// which regions each mirror has taken since its last completed flush: a
// mirror that fails may have lost them from its cache, so they join its
// map. Without StateDir, or when the file is missing or corrupt, a copy
// gets a full copy: all bits set.
//
// # Resync and verify
//
// Volume.Resync greets the copy, switches it to resyncing (new writes now
// go to it and wait for it, but its failure only sends it back to out of
// sync), and copies each dirty region under the region's range lock, rate
// limited by Config.ResyncRate on the injected Clock. Every 64 MiB, and
// once every dirty region was sent, it flushes the copy and only then
// clears the regions sent before the flush (invariant 8). With the map
// empty after a flush it proposes Coordinator.MarkInSync; during that
// commit the copy is joining, and if it fails then, the owner drops it
// through the Coordinator unless the join was refused. A MarkInSync of
// unknown outcome gets the copy dropped too (invariant 1).
// Volume.ResyncFull is the same from an all-dirty map (new or wiped copy).
// A resync greets the copy first and checks its generation: a full copy
// (every region dirty) gives it a new one in the hello, which the join
// records; an incremental one goes on only if the copy is the one the map
// describes (the recorded generation), else every region is marked and it
// becomes a full copy.
// Volume.Verify compares SHA-256 digests of each region on both sides
// under the range lock and reports divergent regions.
//
// # Wire
//
// Messages are framed with a CRC32C of the header and of the payload (see
// wire.go; hellos carry copy generations in their payloads); the TCP transport pipelines requests on one connection per
// mirror per LUN, batches whatever queued during the previous write into
// one syscall, and matches replies by request id. A Mirror applies the
// requests of one connection in order.
//
// The replication port takes connections from anyone who reaches it, so
// what one costs is bounded: a TCPServer refuses a frame whose payload is
// above its limit (SetMaxPayload, default a little above the default
// MaxMessage) before reading or allocating any of it, and closes the
// connection (ErrTooLarge); payloads are read into a per-connection buffer
// that grows only as the bytes arrive; at most SetMaxConns connections are
// served at once; a verify request is hashed in pieces. An owner reads
// replies with a limit of a few KiB (the largest is a 32-byte digest).
//
// # Reads
//
// Reads come from the owner's local copy, while it is the owner.
package replication
