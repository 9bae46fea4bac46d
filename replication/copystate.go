package replication

import (
	"errors"
	"fmt"
)

// copyState is the owner's view of one other copy of the LUN: its phase,
// the connection the owner writes to it on, its dirty-region map, the
// regions it took since its last flush, the drop or join being committed
// for it, and the flags of its resync. Only its transitions (the methods
// below) change it; a Volume calls them with v.mu held, and does what they
// ask of it (commit the episode one opened, log, depose). A transition
// that does not apply to the copy's phase (or to the connection or
// episode it names) changes nothing and answers an error wrapping
// errRefused, never a panic. TestCopyStateTransitions checks every
// (phase, event) pair; TestCopyStateOnlyTransitionsAssign that no other
// file assigns these fields.
//
// Phases and the transitions between them:
//
//	               fail
//	in-sync ---------------------> dropping
//	   ^                           ^  |   ^
//	   |             fail,         |  |   |
//	   | joinCommitted joinUnknown |  |   | listedInSync (from resyncing too)
//	   |                           |  |   |
//	joining -----------------------+  |   |
//	   |  ^             dropCommitted,|   |
//	   |  |                dropFailed |   |
//	   |  |                           v   |
//	   +--|------ joinRefused ------> out-of-sync ------ removed ------> removed
//	      |                           |   ^
//	      |               startResync |   | fail
//	      |                           v   |
//	      +--------- caughtUp ------- resyncing
//
// A copy that fails while joining waits in dropping for the join's
// outcome: joinCommitted, joinRefused and joinUnknown then end the join
// episode, which the drop waits for, and dropCommitted or dropFailed come
// after. startResync needs claimResync first (a resync running), removed
// needs none running.
//
//	event           from                         to           effects
//	inSyncCopy      (Open: Raft lists it)        in-sync      -
//	outOfSyncCopy   (Open; a new replica)        out-of-sync  its map (persisted, or all dirty)
//	connected       in-sync, no connection       in-sync      the connection Open greeted it on
//	fail            in-sync                      dropping     drop opened (an empty map made if none); its connection closed
//	                joining                      dropping     drop opened, committed after the join ends
//	                resyncing                    out-of-sync  unflushed regions join the map (compare)
//	                resyncing (earlier conn)     resyncing    -
//	                dropping, out-of-sync,       unchanged    -
//	                removed
//	                (lost: every phase)          unchanged    every region dirty, no compare
//	listedInSync    out-of-sync, resyncing       dropping     connection closed, drop opened
//	dropUnflushed   dropping                     dropping     unflushed regions join the map (compare)
//	dropCommitted   dropping (its episode,       out-of-sync  drop closed
//	                no join running)
//	dropFailed      dropping (idem)              out-of-sync  drop closed with the error (the owner deposes)
//	claimResync     out-of-sync, no resync       out-of-sync  resync running
//	releaseResync   any, resync running          unchanged    no resync running
//	startResync     out-of-sync, resync running  resyncing    its connection; unflushed emptied
//	caughtUp        resyncing on the conn,       joining      join opened
//	                map empty
//	joinCommitted   joining                      in-sync      map dropped, no compare; join closed (may have committed)
//	                dropping (failed joining)    dropping     join closed (may have committed: the drop is proposed)
//	joinRefused     joining                      out-of-sync  join closed (refused: a drop waiting for it is not proposed)
//	                dropping (failed joining)    dropping     join closed (refused)
//	joinUnknown     joining                      dropping     connection closed, drop opened; join closed (may have committed)
//	                dropping (failed joining)    dropping     join closed (may have committed)
//	removed         out-of-sync, no resync       removed      its map handed back (the caller removes its file)
//
// Every other (phase, event) pair is refused. Besides the phase changes:
// routeWrite and flushStarted say what a write or a flush does with the
// copy in each phase (flushFailed gives a failed flush's regions back);
// regionSent, regionSame, resyncFlushStarted, resyncFlushFailed and
// resyncFlushed record a resync's progress, only on its own connection;
// wrongCopy and suspect mark every region of a copy greeted at Open or by
// a resync's hello; gaveGeneration, repairWrite, hangUp and closeConn are
// the rest.
//
// Invariants kept for the copy (DESIGN.md's numbers):
//
//   - 1, 3: while Raft may list the copy in sync (in-sync, joining,
//     dropping), no write skips it without waiting: in-sync and joining
//     copies are sent every write and waited for, and a dropping copy's
//     writes mark its map and wait for the drop episode, which ends only
//     through dropCommitted (DropFromInSync committed, or was not needed
//     because the join was refused, and the map is durable) or dropFailed
//     (the owner stops serving). in-sync and joining leave only to
//     dropping, except joining on joinRefused (nothing was committed, and
//     the owner stops serving).
//   - 6: a copy returns only through resyncing: caughtUp needs its map
//     empty on the resync's own connection, and only joinCommitted (the
//     MarkInSync commit) makes it in-sync.
//   - 8: a region the resync sent or found equal is marked copied, not
//     clean, and cleared only by resyncFlushed on the same connection,
//     after the flush; the regions a write-back copy took since its last
//     flush join its map when it fails (fail from resyncing,
//     dropUnflushed) and go back to the unflushed set when a flush of it
//     fails.
//   - The map exists whenever the copy is not in-sync or joining: from
//     its construction or its drop; joinCommitted alone drops it.
type copyState struct {
	phase copyPhase
	// conn is the connection the owner sends the copy's writes on (nil:
	// none). A failure on another (earlier) one is not the current
	// connection's.
	conn Conn
	// dirty: regions the copy has not seen; nil while in sync or joining.
	dirty *DirtyMap
	// unflushed: regions written to the copy since its last completed
	// flush (write-back only). A copy that fails may have lost them from
	// its cache, so they join the dirty map.
	unflushed *DirtyMap
	// drop is the episode of the DropFromInSync being committed (while
	// dropping); join the MarkInSync's (while joining, and while dropping
	// a copy that failed while joining).
	drop *episode
	join *episode
	// resyncRunning: a Resync claimed the copy (from claimResync to
	// releaseResync), whatever the phase meanwhile.
	resyncRunning bool
	// compare makes the resync compare each dirty region's digests and
	// copy only the regions that differ (a copy that may diverge
	// anywhere, but mostly is identical).
	compare bool
	// wroteGen is the generation this volume gave the copy when a full
	// copy of it started (not recorded before the copy joins): a resync
	// that finds it on the copy goes on from the dirty map.
	wroteGen Generation
	maps     copyMaps
}

// copyPhase is what the owner does with a copy on another node.
type copyPhase int

const (
	// phaseInSync: in Raft's in-sync set; every write waits for its ack;
	// a failure is dropped through Raft before anything it missed is
	// acked.
	phaseInSync copyPhase = iota
	// phaseDropping: failed; DropFromInSync is being committed. Writes
	// mark the dirty map and wait for the commit.
	phaseDropping
	// phaseOutOfSync: not in the in-sync set: writes only mark the dirty
	// map (durably) and do not wait for the copy.
	phaseOutOfSync
	// phaseResyncing: catching up from the dirty map; new writes go to it
	// and wait for its ack, a failure returns it to out of sync.
	phaseResyncing
	// phaseJoining: caught up; MarkInSync is being committed. Treated as
	// in sync, so that a failure now is dropped through Raft unless the
	// join was refused. A MarkInSync that fails otherwise may have
	// committed all the same: the copy is then dropped.
	phaseJoining
	// phaseRemoved: no longer a replica of the LUN; the volume forgot it.
	phaseRemoved
)

var phaseNames = [...]string{"in-sync", "dropping", "out-of-sync", "resyncing", "joining", "removed"}

func (s copyPhase) String() string {
	if s < 0 || int(s) >= len(phaseNames) {
		return fmt.Sprintf("phase(%d)", int(s))
	}
	return phaseNames[s]
}

// copyMaps makes the maps of one copy: fresh is the empty dirty map of a
// copy that leaves the in-sync set (its file path set, so it persists),
// unflushed an empty set of regions taken since the last flush (nil in
// write-through mode).
type copyMaps struct {
	fresh     func() *DirtyMap
	unflushed func() *DirtyMap
}

// errRefused is wrapped by the error of a transition that does not apply
// to the copy: it changed nothing.
var errRefused = errors.New("replication: copy state transition refused")

// refusal says which transition was refused in which phase, and why.
type refusal struct {
	event string
	from  copyPhase
	why   string
}

func (r *refusal) Error() string {
	return fmt.Sprintf("replication: %s does not apply to a copy %s (%s)", r.event, r.from, r.why)
}

func (r *refusal) Unwrap() error { return errRefused }

func (c *copyState) refuse(event, why string) error {
	return &refusal{event: event, from: c.phase, why: why}
}

// episode is one commit of an in-sync change (a drop or a join) that
// writes may wait for.
type episode struct {
	done chan struct{}
	err  error // drop: the commit failed
	// join: MarkInSync may have committed: it returned nil, or an error
	// that does not say it was refused (a timeout, a leader lost after
	// the append). Only ErrNotOwner (the epoch moved on) says it was not.
	mayHaveCommitted bool
}

func newEpisode() *episode { return &episode{done: make(chan struct{})} }

// end closes the episode with err (nil: it went through).
func (e *episode) end(err error) {
	e.err = err
	close(e.done)
}

// endedEpisode is an episode already over, with err.
func endedEpisode(err error) *episode {
	e := newEpisode()
	e.end(err)
	return e
}

// inSyncCopy is a copy Raft lists in sync at Open, not yet connected.
func inSyncCopy(m copyMaps) copyState {
	return copyState{phase: phaseInSync, unflushed: m.unflushed(), maps: m}
}

// outOfSyncCopy is a copy out of sync with dirty, its map (at Open, or a
// new replica with every region dirty).
func outOfSyncCopy(dirty *DirtyMap, m copyMaps) copyState {
	return copyState{phase: phaseOutOfSync, dirty: dirty, unflushed: m.unflushed(), maps: m}
}

// connected: Open greeted the in-sync copy on conn, which becomes its
// connection. From in-sync without a connection.
func (c *copyState) connected(conn Conn) error {
	switch {
	case c.phase != phaseInSync:
		return c.refuse("connected", "only an in-sync copy is greeted at Open")
	case conn == nil || c.conn != nil:
		return c.refuse("connected", "it needs one new connection")
	}
	c.conn = conn
	return nil
}

// hangUp: a request on conn failed (nil: not on a connection of the
// copy's). If conn is the copy's connection, it is closed and forgotten.
// It reports whether conn is an earlier connection (not nil and not the
// current one), whose failure says nothing about the current one. Every
// phase; the phase does not change.
func (c *copyState) hangUp(conn Conn) (earlier bool) {
	if conn == nil {
		return false
	}
	if c.conn != conn {
		return true
	}
	c.conn.Close()
	c.conn = nil
	return false
}

// closeConn closes the copy's connection, if any (the volume closes or
// stops serving). Every phase; the phase does not change.
func (c *copyState) closeConn() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// failure is what fail did.
type failure struct {
	// drop is the drop episode the failure opened (nil: none): the
	// caller commits it (Volume.runDrop), once join ends when join is
	// not nil.
	drop, join *episode
	// wait is the episode a write the copy missed waits for before it
	// is acknowledged: its drop, new or running (nil: none).
	wait *episode
	// leftResync: the copy was resyncing and is out of sync again.
	leftResync bool
	// lost: every region was marked dirty (the copy was lost).
	lost bool
}

// fail: a request on conn (nil: none of the copy's connections, e.g. a
// hello) failed; lost says the copy answered that it lost its data. It
// applies to every phase (a late answer may come in any):
//
//   - conn, if it is the copy's connection, is closed (hangUp);
//   - in-sync: dropping; a drop episode is opened, with an empty map if
//     the copy has none;
//   - joining: dropping, with a drop episode to commit once the join ends;
//   - resyncing: out-of-sync, the unflushed regions join the map and the
//     next resync compares. A failure on an earlier connection (its
//     requests can finish late) says nothing about the current one and
//     changes nothing: the write it belongs to marks the map (the
//     caller's job) and the resync copies it. Only a copy in sync or
//     joining is dropped for it (it may have joined without that write);
//   - dropping, out-of-sync, removed: no change;
//   - lost: every region of its map (if it has one) is marked dirty, to
//     be copied without comparing.
func (c *copyState) fail(conn Conn, lost bool) failure {
	var f failure
	earlier := c.hangUp(conn)
	switch c.phase {
	case phaseInSync:
		f.drop = c.startDrop()
	case phaseJoining:
		f.join = c.join
		f.drop = c.startDrop()
	case phaseResyncing:
		if !earlier {
			c.phase = phaseOutOfSync
			c.mergeUnflushed()
			f.leftResync = true
		}
	}
	if c.phase == phaseDropping {
		f.wait = c.drop
	}
	if lost {
		f.lost = c.lose()
	}
	return f
}

// lose marks every region of the copy's map dirty and turns comparing off
// (its data is gone: a full copy). It reports whether it marked anything:
// not when the copy has no map or every region is dirty already. Every
// phase; the phase does not change.
func (c *copyState) lose() bool {
	if c.dirty == nil || c.dirty.Count() == c.dirty.Regions() {
		return false
	}
	c.dirty.SetAll()
	c.compare = false
	return true
}

// startDrop switches the copy to dropping with a new drop episode (and an
// empty map if it has none) and returns the episode.
func (c *copyState) startDrop() *episode {
	if c.dirty == nil {
		c.dirty = c.maps.fresh()
	}
	c.phase = phaseDropping
	c.drop = newEpisode()
	return c.drop
}

// mergeUnflushed marks dirty the regions the copy took since its last
// flush (its cache may be gone: a crash of its machine) and returns the
// dirty map's generation. A process that died on a machine that stayed up
// still has them (the kernel keeps its dirty pages), so the resync then
// compares each region before it copies it: only what differs goes over
// the wire (like DRBD's csums-alg).
func (c *copyState) mergeUnflushed() uint64 {
	if c.unflushed == nil || c.unflushed.Count() == 0 {
		return 0
	}
	gen := c.dirty.Merge(c.unflushed)
	c.unflushed = c.maps.unflushed()
	c.compare = true
	return gen
}

// listedInSync: Raft lists the copy in sync while the owner does not
// replicate to it (out-of-sync or resyncing): it is dropped like a failed
// copy. Its connection is closed (a resync of it stops) and a drop
// episode opened, which it returns.
func (c *copyState) listedInSync() (*episode, error) {
	if c.phase != phaseOutOfSync && c.phase != phaseResyncing {
		return nil, c.refuse("listedInSync", "only a copy the owner does not replicate to is dropped for it")
	}
	c.closeConn()
	return c.startDrop(), nil
}

// dropUnflushed: the drop's commit is over (or was not needed); before it
// ends, the regions the copy took since its last flush join its map. It
// returns the map and the generation to wait durable for. From dropping,
// which the copy stays.
func (c *copyState) dropUnflushed() (*DirtyMap, uint64, error) {
	if c.phase != phaseDropping {
		return nil, 0, c.refuse("dropUnflushed", "no drop is running")
	}
	return c.dirty, c.mergeUnflushed(), nil
}

// dropCommitted: DropFromInSync committed (or was not needed) and the map
// is durable: the copy is out of sync and ep, its drop episode, ends. From
// dropping, with ep its episode, and no join running (the drop of a copy
// that failed while joining ends after the join).
func (c *copyState) dropCommitted(ep *episode) error { return c.endDrop("dropCommitted", ep, nil) }

// dropFailed: the drop did not commit, or the map could not be persisted:
// ep ends with err (the writes waiting for it fail and the owner stops
// serving) and the copy is out of sync. From dropping, with ep its
// episode, and no join running.
func (c *copyState) dropFailed(ep *episode, err error) error {
	if err == nil {
		return c.refuse("dropFailed", "no error given")
	}
	return c.endDrop("dropFailed", ep, err)
}

func (c *copyState) endDrop(event string, ep *episode, err error) error {
	if c.phase != phaseDropping {
		return c.refuse(event, "no drop is running")
	}
	if ep == nil || c.drop != ep {
		return c.refuse(event, "not the copy's drop episode")
	}
	if c.join != nil {
		// The drop of a copy that failed while joining waits for the
		// join's outcome (Volume.runDrop), which ends the join first.
		return c.refuse(event, "the join it waits for has not ended")
	}
	c.phase = phaseOutOfSync
	c.drop = nil
	ep.end(err)
	return nil
}

// canResync reports whether a resync may claim the copy: out of sync, and
// no resync running.
func (c *copyState) canResync() bool { return c.phase == phaseOutOfSync && !c.resyncRunning }

// claimResync: a Resync claims the copy. From out-of-sync with no resync
// running; the phase does not change (startResync changes it once the
// copy answered).
func (c *copyState) claimResync() error {
	if !c.canResync() {
		return c.refuse("claimResync", "needs an out-of-sync copy with no resync running")
	}
	c.resyncRunning = true
	return nil
}

// releaseResync: the Resync that claimed the copy returned. From any
// phase with a resync running; the phase does not change.
func (c *copyState) releaseResync() error {
	if !c.resyncRunning {
		return c.refuse("releaseResync", "no resync running")
	}
	c.resyncRunning = false
	return nil
}

// startResync: the claimed copy answered the resync's hello on conn: it
// is resyncing, conn is its connection, and its unflushed set starts
// empty. It returns whether the resync compares regions before copying
// them. From out-of-sync with a resync running.
func (c *copyState) startResync(conn Conn) (compare bool, err error) {
	switch {
	case c.phase != phaseOutOfSync:
		return false, c.refuse("startResync", "only an out-of-sync copy is resynced")
	case !c.resyncRunning:
		return false, c.refuse("startResync", "no resync claimed the copy")
	case conn == nil:
		return false, c.refuse("startResync", "no connection")
	}
	c.conn = conn
	c.phase = phaseResyncing
	c.unflushed = c.maps.unflushed()
	return c.compare, nil
}

// resyncingOn reports whether the copy is resyncing on conn (the resync
// that opened conn is still the copy's).
func (c *copyState) resyncingOn(conn Conn) bool {
	return c.phase == phaseResyncing && conn != nil && c.conn == conn
}

// regionSame: the resync on conn found region r equal on the copy: it is
// marked copied (cleared after the next flush). From resyncing on conn.
func (c *copyState) regionSame(conn Conn, r int64) error {
	if !c.resyncingOn(conn) {
		return c.refuse("regionSame", "not resyncing on this connection")
	}
	c.dirty.Copied(r)
	return nil
}

// regionSent: the resync on conn is sending region r: it is marked copied
// (cleared after the next flush). From resyncing on conn.
func (c *copyState) regionSent(conn Conn, r int64) error {
	if !c.resyncingOn(conn) {
		return c.refuse("regionSent", "not resyncing on this connection")
	}
	if brokenDirtyClear {
		// Broken on purpose (see broken_dirtyclear.go): cleared for
		// good before the copy made the region durable.
		c.dirty.Clear(r)
		c.dirty.Flush()
		return nil
	}
	c.dirty.Copied(r)
	return nil
}

// resyncFlushStarted: the resync on conn flushes the copy: it returns the
// regions the copy took since its last flush, whose set starts empty
// again. From resyncing on conn.
func (c *copyState) resyncFlushStarted(conn Conn) (*DirtyMap, error) {
	if !c.resyncingOn(conn) {
		return nil, c.refuse("resyncFlushStarted", "not resyncing on this connection")
	}
	snap := c.unflushed
	c.unflushed = c.maps.unflushed()
	return snap, nil
}

// resyncFlushFailed: the resync's flush on conn failed; snap is what
// resyncFlushStarted returned. Still resyncing on conn, snap goes back to
// the unflushed set (the failure that follows merges it into the map);
// else the copy failed meanwhile (out-of-sync, or dropping when Raft
// listed it) and its unflushed regions joined the map already, so snap
// joins the map now and the next resync compares. From resyncing on conn,
// out-of-sync or dropping; the phase does not change.
func (c *copyState) resyncFlushFailed(conn Conn, snap *DirtyMap) error {
	switch {
	case c.resyncingOn(conn):
		if snap != nil {
			c.unflushed.Merge(snap)
		}
		return nil
	case c.phase != phaseOutOfSync && c.phase != phaseDropping:
		return c.refuse("resyncFlushFailed", "not resyncing on this connection, nor failed since")
	}
	if snap != nil {
		c.dirty.Merge(snap)
		c.compare = true
	}
	return nil
}

// resyncFlushed: the resync's flush on conn succeeded: the regions copied
// before it are cleared (invariant 8). From resyncing on conn.
func (c *copyState) resyncFlushed(conn Conn) error {
	if !c.resyncingOn(conn) {
		return c.refuse("resyncFlushed", "not resyncing on this connection")
	}
	c.dirty.ClearCopied()
	return nil
}

// caughtUp: the resync on conn left the map empty after a flush: the copy
// is joining, and a join episode (the MarkInSync commit) is opened and
// returned. From resyncing on conn with an empty map.
func (c *copyState) caughtUp(conn Conn) (*episode, error) {
	switch {
	case !c.resyncingOn(conn):
		return nil, c.refuse("caughtUp", "not resyncing on this connection")
	case c.dirty.Count() != 0:
		return nil, c.refuse("caughtUp", "regions are still dirty")
	}
	c.phase = phaseJoining
	c.join = newEpisode()
	return c.join, nil
}

func (c *copyState) checkJoin(event string, join *episode) error {
	if c.phase != phaseJoining && c.phase != phaseDropping {
		return c.refuse(event, "no join is running")
	}
	if join == nil || c.join != join {
		return c.refuse(event, "not the copy's join episode")
	}
	return nil
}

func (c *copyState) endJoin(join *episode, mayHaveCommitted bool) {
	join.mayHaveCommitted = mayHaveCommitted
	c.join = nil
	join.end(nil)
}

// joinCommitted: MarkInSync committed. A joining copy is in sync: its map
// is dropped (the caller removes its file) and comparing turned off. A
// copy that failed while joining stays dropping: its drop, which waits for
// the join, is proposed. Either way the join episode ends, as one that may
// have committed. From joining or dropping, with join its episode.
func (c *copyState) joinCommitted(join *episode) error {
	if err := c.checkJoin("joinCommitted", join); err != nil {
		return err
	}
	if c.phase == phaseJoining {
		c.phase = phaseInSync
		c.dirty = nil
		c.compare = false
	}
	c.endJoin(join, true)
	return nil
}

// joinRefused: MarkInSync was refused (the epoch moved on; the owner stops
// serving): nothing was committed. A joining copy is out of sync; one that
// failed while joining stays dropping, and its drop is not proposed. The
// join episode ends as one that did not commit. From joining or dropping,
// with join its episode.
func (c *copyState) joinRefused(join *episode) error {
	if err := c.checkJoin("joinRefused", join); err != nil {
		return err
	}
	if c.phase == phaseJoining {
		c.phase = phaseOutOfSync
	}
	c.endJoin(join, false)
	return nil
}

// joinUnknown: MarkInSync failed without saying it was refused, so it may
// have committed and Raft list the copy in sync. A joining copy is
// dropped: its connection is closed (writes stop going to it) and a drop
// episode opened and returned, which the caller commits without waiting.
// One that failed while joining stays dropping (its drop is proposed).
// The join episode ends as one that may have committed. From joining or
// dropping, with join its episode.
func (c *copyState) joinUnknown(join *episode) (*episode, error) {
	if err := c.checkJoin("joinUnknown", join); err != nil {
		return nil, err
	}
	var drop *episode
	if c.phase == phaseJoining {
		c.closeConn()
		drop = c.startDrop()
	}
	c.endJoin(join, true)
	return drop, nil
}

// removed: the view no longer lists the copy as a replica. It returns the
// copy's map, whose file the caller removes. From out-of-sync with no
// resync running (a copy the owner writes to leaves once out of sync).
func (c *copyState) removed() (*DirtyMap, error) {
	if !c.canResync() {
		return nil, c.refuse("removed", "only an out-of-sync copy with no resync running leaves")
	}
	c.phase = phaseRemoved
	return c.dirty, nil
}

// wrongCopy: the copy is not the one the cluster recorded: every region
// of its map (an empty one made if it has none) is marked dirty, and the
// resync compares each region first when compare is set. From in-sync
// (Open, deposed meanwhile), dropping (Open, after its failure) or
// out-of-sync (a resync's hello, before it starts): a resyncing or joining
// copy was greeted already, and marking a joining copy's map would be
// lost when it joins. The phase does not change.
func (c *copyState) wrongCopy(compare bool) error {
	if c.phase != phaseInSync && c.phase != phaseDropping && c.phase != phaseOutOfSync {
		return c.refuse("wrongCopy", "only a copy being greeted is checked")
	}
	if c.dirty == nil {
		c.dirty = c.maps.fresh()
	}
	c.dirty.SetAll()
	c.compare = compare
	return nil
}

// suspect: the copy may hold writes a previous owner had in flight,
// anywhere (Config.CheckOnOpen): every region of its map, if it has one,
// is marked dirty, to be compared before it is copied. From in-sync,
// dropping or out-of-sync (the phases of a copy at Open); the phase does
// not change.
func (c *copyState) suspect() error {
	if c.phase != phaseInSync && c.phase != phaseDropping && c.phase != phaseOutOfSync {
		return c.refuse("suspect", "only a copy at Open is suspected")
	}
	if c.dirty != nil {
		c.dirty.SetAll()
		c.compare = true
	}
	return nil
}

// gaveGeneration: the running resync's full copy gave the copy generation
// gen in its hello. Needs a resync running; the phase does not change.
func (c *copyState) gaveGeneration(gen Generation) error {
	if !c.resyncRunning {
		return c.refuse("gaveGeneration", "no resync running")
	}
	c.wroteGen = gen
	return nil
}

// copyWrite is what a write does with a copy.
type copyWrite struct {
	// send: the write goes on conn (nil: it fails as not connected) and
	// waits for the copy's answer.
	send bool
	conn Conn
	// marked: the range was marked in the copy's map; the write waits
	// until the mark is durable.
	marked *durable
	// wait: the write waits for this episode (the copy's drop).
	wait *episode
}

// routeWrite says what a write of [off, off+length) does with the copy,
// by phase: in-sync, joining and resyncing copies are sent it (and, unless
// fua, it joins their unflushed set); a dropping copy's map is marked and
// the write waits for the drop; an out-of-sync copy's map is marked. A
// removed copy gets nothing. The phase does not change.
func (c *copyState) routeWrite(off, length int64, fua bool) copyWrite {
	switch c.phase {
	case phaseInSync, phaseJoining, phaseResyncing:
		if c.unflushed != nil && !fua {
			c.unflushed.Mark(off, length)
		}
		return copyWrite{send: true, conn: c.conn}
	case phaseDropping:
		return copyWrite{marked: &durable{c.dirty, c.dirty.Mark(off, length)}, wait: c.drop}
	case phaseOutOfSync:
		return copyWrite{marked: &durable{c.dirty, c.dirty.Mark(off, length)}}
	}
	return copyWrite{}
}

// copyFlush is what a flush (SYNCHRONIZE CACHE) does with a copy.
type copyFlush struct {
	// send: the flush goes on conn; snap is the unflushed set it makes
	// durable (give it back with flushFailed if the flush fails).
	send bool
	conn Conn
	snap *DirtyMap
	// wait: the flush waits for this episode (the copy's drop).
	wait *episode
}

// flushStarted says what a flush does with the copy, by phase: in-sync,
// joining and resyncing copies are sent it, and their unflushed set
// starts empty; a dropping copy's drop is waited for. The phase does not
// change.
func (c *copyState) flushStarted() copyFlush {
	switch c.phase {
	case phaseInSync, phaseJoining, phaseResyncing:
		snap := c.unflushed
		c.unflushed = c.maps.unflushed()
		return copyFlush{send: true, conn: c.conn, snap: snap}
	case phaseDropping:
		return copyFlush{wait: c.drop}
	}
	return copyFlush{}
}

// flushFailed: a flush of the copy failed; snap is what flushStarted
// returned: the copy may have lost those regions from its cache, so they
// go back to its unflushed set while it is written to (in-sync, joining,
// resyncing), else to its map: a copy that failed meanwhile had its
// unflushed set merged already, and its next resync would empty it. Every
// phase; the phase does not change.
func (c *copyState) flushFailed(snap *DirtyMap) {
	switch {
	case snap == nil:
	case c.phase != phaseInSync && c.phase != phaseJoining && c.phase != phaseResyncing && c.dirty != nil:
		// Failed meanwhile (another request's failure already merged
		// the unflushed set into the map, and a resync empties it):
		// straight into the map (invariant 8).
		c.dirty.Merge(snap)
	case c.unflushed != nil:
		c.unflushed.Merge(snap)
	case c.dirty != nil:
		c.dirty.Merge(snap)
	}
}

// inSyncConn returns the connection of an in-sync copy (nil when the copy
// is not in sync or not connected).
func (c *copyState) inSyncConn() Conn {
	if c.phase != phaseInSync {
		return nil
	}
	return c.conn
}

// repairWrite: Repair rewrites [off, off+n) of the in-sync copy on conn:
// the range joins its unflushed set (not durable there before its next
// flush). From in-sync on conn; the phase does not change.
func (c *copyState) repairWrite(conn Conn, off, n int64) error {
	if c.phase != phaseInSync || conn == nil || c.conn != conn {
		return c.refuse("repairWrite", "not in sync on this connection")
	}
	if c.unflushed != nil {
		c.unflushed.Mark(off, n)
	}
	return nil
}

// waitedFor reports whether the owner waits for the copy as a member of
// the in-sync set (in-sync or joining).
func (c *copyState) waitedFor() bool { return c.phase == phaseInSync || c.phase == phaseJoining }
