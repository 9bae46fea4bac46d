package replication

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The transitions of a copy's state (copystate.go), event by event, from
// every phase a copy can be in (the fixtures below). Each entry is the
// phase after the event and the effects seen, or "refused": the event did
// not apply and nothing changed. Fixtures an event does not list must
// refuse it.

const (
	csRegion  = 4096
	csRegions = 16
)

// fakeConn is a connection that only records its Close.
type fakeConn struct {
	name   string
	closed bool
}

func (c *fakeConn) Send(req *Message, done func(*Message, error)) {
	go done(nil, fmt.Errorf("%w: fake connection", ErrPeerFailed))
}
func (c *fakeConn) Close() error { c.closed = true; return nil }

func csMap(regions ...int64) *DirtyMap {
	d := NewDirtyMap(csRegions*csRegion, csRegion)
	for _, r := range regions {
		d.Mark(r*csRegion, 1)
	}
	return d
}

func csMaps() copyMaps {
	return copyMaps{fresh: func() *DirtyMap { return csMap() }, unflushed: func() *DirtyMap { return csMap() }}
}

// csFixture is a copy in one phase, reached through transitions, with the
// connections it knows: its own (A at Open, B for its resync) and others.
type csFixture struct {
	c              *copyState
	a, y, b, c2, z *fakeConn // Open's, an earlier resync's, this resync's, a new one, a stranger
	stepErr        error     // the first refusal on the way to the fixture
	gen            Generation
}

func (f *csFixture) step(err error) {
	if err != nil && f.stepErr == nil {
		f.stepErr = err
	}
}

var csFixtureNames = []string{
	"in-sync", "in-sync, unconnected", "dropping", "dropping, joining",
	"out-of-sync", "out-of-sync, claimed", "resyncing", "resyncing, map empty",
	"joining", "removed",
}

// newCSFixture builds the fixture called name. The copies' maps:
//
//	in-sync        unflushed {5}
//	dropping       (from in-sync) map {} , unflushed {5}, a drop
//	out-of-sync    map {0,5} after a resync that failed (compare on)
//	resyncing      map {0,5}, 0 copied, unflushed {6}, on B
//	... map empty  5 copied too, flushed: map {}
//	joining        caught up on B, a join
//	dropping, joining  joining, then failed on B
//	removed        out-of-sync, then removed
func newCSFixture(name string) *csFixture {
	f := &csFixture{a: &fakeConn{name: "A"}, y: &fakeConn{name: "Y"}, b: &fakeConn{name: "B"},
		c2: &fakeConn{name: "C"}, z: &fakeConn{name: "Z"}, gen: Generation{1, 2, 3}}
	m := csMaps()
	inSync := func() {
		cs := inSyncCopy(m)
		f.c = &cs
	}
	outOfSync := func() {
		cs := outOfSyncCopy(csMap(0), m)
		f.c = &cs
		f.step(f.c.claimResync())
		_, err := f.c.startResync(f.y)
		f.step(err)
		f.c.unflushed.Mark(5*csRegion, 1)
		f.c.fail(f.y, false)
		f.step(f.c.releaseResync())
	}
	resyncing := func() {
		outOfSync()
		f.step(f.c.claimResync())
		_, err := f.c.startResync(f.b)
		f.step(err)
		f.c.unflushed.Mark(6*csRegion, 1)
		f.step(f.c.regionSent(f.b, 0))
	}
	caughtUp := func() {
		resyncing()
		f.step(f.c.regionSent(f.b, 5))
		f.step(f.c.resyncFlushed(f.b))
	}
	joining := func() {
		caughtUp()
		_, err := f.c.caughtUp(f.b)
		f.step(err)
	}
	switch name {
	case "in-sync":
		inSync()
		f.step(f.c.connected(f.a))
		f.c.unflushed.Mark(5*csRegion, 1)
	case "in-sync, unconnected":
		inSync()
	case "dropping":
		inSync()
		f.step(f.c.connected(f.a))
		f.c.unflushed.Mark(5*csRegion, 1)
		f.c.fail(f.a, false)
	case "dropping, joining":
		joining()
		f.c.fail(f.b, false)
	case "out-of-sync":
		outOfSync()
	case "out-of-sync, claimed":
		outOfSync()
		f.step(f.c.claimResync())
	case "resyncing":
		resyncing()
	case "resyncing, map empty":
		caughtUp()
	case "joining":
		joining()
	case "removed":
		outOfSync()
		_, err := f.c.removed()
		f.step(err)
	default:
		panic("no fixture " + name)
	}
	return f
}

// csEvent applies one event to f's copy and returns the effects seen in
// its results (not in the copy's fields: those are compared by csDiff).
type csEvent func(f *csFixture) (extra []string, err error)

// conn is the copy's own connection (nil: none).
func (f *csFixture) conn() Conn { return f.c.conn }

func failEvent(conn func(f *csFixture) Conn, lost bool) csEvent {
	return func(f *csFixture) ([]string, error) {
		r := f.c.fail(conn(f), lost)
		var extra []string
		if r.drop != nil && r.drop == f.c.drop {
			extra = append(extra, "commit")
		}
		if r.join != nil {
			extra = append(extra, "drop-after-join")
		}
		if r.wait != nil && r.wait == f.c.drop {
			extra = append(extra, "waits")
		}
		if r.leftResync {
			extra = append(extra, "left-resync")
		}
		if r.lost {
			extra = append(extra, "lost")
		}
		return extra, nil
	}
}

// committed names a returned episode the caller commits: the copy's own.
func committed(ep, own *episode) []string {
	if ep != nil && ep == own {
		return []string{"commit"}
	}
	return nil
}

var csEvents = map[string]csEvent{
	"fail":          failEvent((*csFixture).conn, false),
	"fail, earlier": failEvent(func(f *csFixture) Conn { return f.z }, false),
	"fail, lost":    failEvent((*csFixture).conn, true),
	"listedInSync": func(f *csFixture) ([]string, error) {
		ep, err := f.c.listedInSync()
		return committed(ep, f.c.drop), err
	},
	"dropUnflushed": func(f *csFixture) ([]string, error) {
		d, _, err := f.c.dropUnflushed()
		if d != nil && d == f.c.dirty {
			return []string{"map"}, err
		}
		return nil, err
	},
	"dropCommitted": func(f *csFixture) ([]string, error) { return nil, f.c.dropCommitted(f.c.drop) },
	"dropFailed": func(f *csFixture) ([]string, error) {
		return nil, f.c.dropFailed(f.c.drop, errors.New("no quorum"))
	},
	"claimResync":   func(f *csFixture) ([]string, error) { return nil, f.c.claimResync() },
	"releaseResync": func(f *csFixture) ([]string, error) { return nil, f.c.releaseResync() },
	"startResync": func(f *csFixture) ([]string, error) {
		_, err := f.c.startResync(f.c2)
		return nil, err
	},
	"regionSent":         func(f *csFixture) ([]string, error) { return nil, f.c.regionSent(f.conn(), 5) },
	"regionSame":         func(f *csFixture) ([]string, error) { return nil, f.c.regionSame(f.conn(), 5) },
	"resyncFlushStarted": func(f *csFixture) ([]string, error) { _, err := f.c.resyncFlushStarted(f.conn()); return nil, err },
	"resyncFlushFailed": func(f *csFixture) ([]string, error) {
		return nil, f.c.resyncFlushFailed(f.conn(), csMap(11))
	},
	"resyncFlushed": func(f *csFixture) ([]string, error) { return nil, f.c.resyncFlushed(f.conn()) },
	"caughtUp": func(f *csFixture) ([]string, error) {
		ep, err := f.c.caughtUp(f.conn())
		return committed(ep, f.c.join), err
	},
	"joinCommitted": func(f *csFixture) ([]string, error) { return nil, f.c.joinCommitted(f.c.join) },
	"joinRefused":   func(f *csFixture) ([]string, error) { return nil, f.c.joinRefused(f.c.join) },
	"joinUnknown": func(f *csFixture) ([]string, error) {
		ep, err := f.c.joinUnknown(f.c.join)
		return committed(ep, f.c.drop), err
	},
	"removed": func(f *csFixture) ([]string, error) {
		d, err := f.c.removed()
		if d != nil && d == f.c.dirty {
			return []string{"map"}, err
		}
		return nil, err
	},
	"connected":      func(f *csFixture) ([]string, error) { return nil, f.c.connected(f.c2) },
	"wrongCopy":      func(f *csFixture) ([]string, error) { return nil, f.c.wrongCopy(true) },
	"suspect":        func(f *csFixture) ([]string, error) { return nil, f.c.suspect() },
	"gaveGeneration": func(f *csFixture) ([]string, error) { return nil, f.c.gaveGeneration(f.gen) },
	"write": func(f *csFixture) ([]string, error) {
		w := f.c.routeWrite(9*csRegion, csRegion, false)
		var extra []string
		if w.send && w.conn == f.c.conn {
			extra = append(extra, "sent")
		}
		if w.marked != nil && w.marked.d == f.c.dirty {
			extra = append(extra, "marked")
		}
		if w.wait != nil && w.wait == f.c.drop {
			extra = append(extra, "waits")
		}
		return extra, nil
	},
	"flush": func(f *csFixture) ([]string, error) {
		before := f.c.unflushed
		fl := f.c.flushStarted()
		var extra []string
		if fl.send && fl.conn == f.c.conn && fl.snap == before {
			extra = append(extra, "sent")
		}
		if fl.wait != nil && fl.wait == f.c.drop {
			extra = append(extra, "waits")
		}
		return extra, nil
	},
	"flushFailed": func(f *csFixture) ([]string, error) { f.c.flushFailed(csMap(12)); return nil, nil },
	"repairWrite": func(f *csFixture) ([]string, error) { return nil, f.c.repairWrite(f.conn(), 10*csRegion, csRegion) },
	"closeConn":   func(f *csFixture) ([]string, error) { f.c.closeConn(); return nil, nil },
}

// csTransitions: event → fixture → "phase: effects". A fixture the event
// does not list must refuse it. Effects (any order):
//
//	conn-set, conn-closed                 the copy's connection
//	dirty-new, dirty-marked, dirty-all,   its map: made, regions marked,
//	dirty-cleared, dirty-dropped, copied  all marked, cleared, dropped, marked copied
//	unflushed-reset, unflushed-marked     its unflushed set: emptied (a new one), marked
//	drop-opened, drop-closed, drop-failed its drop episode (closed with an error)
//	join-opened, join-closed,             its join episode (closed as one that
//	may-have-committed                    may have committed)
//	claimed, released                     a resync running, or no more
//	compare-on, compare-off, gen          its compare flag; the generation given
//
// and from the results: commit (the caller must commit the episode
// opened), drop-after-join (after the running join), waits (a write the
// copy misses waits for its drop), left-resync, lost, sent (the write or
// flush goes on its connection), marked (the write waits for its map),
// map (its map is handed back).
var csTransitions = []struct {
	event string
	to    map[string]string
}{
	{"fail", map[string]string{
		"in-sync":              "dropping: conn-closed dirty-new drop-opened commit waits",
		"in-sync, unconnected": "dropping: dirty-new drop-opened commit waits",
		"dropping":             "dropping: waits",
		"dropping, joining":    "dropping: waits",
		"out-of-sync":          "out-of-sync:",
		"out-of-sync, claimed": "out-of-sync:",
		"resyncing":            "out-of-sync: conn-closed dirty-marked unflushed-reset left-resync",
		"resyncing, map empty": "out-of-sync: conn-closed dirty-marked unflushed-reset left-resync",
		"joining":              "dropping: conn-closed drop-opened commit drop-after-join waits",
		"removed":              "removed:",
	}},
	{"fail, earlier", map[string]string{
		"in-sync":              "dropping: dirty-new drop-opened commit waits",
		"in-sync, unconnected": "dropping: dirty-new drop-opened commit waits",
		"dropping":             "dropping: waits",
		"dropping, joining":    "dropping: waits",
		"out-of-sync":          "out-of-sync:",
		"out-of-sync, claimed": "out-of-sync:",
		"resyncing":            "resyncing:",
		"resyncing, map empty": "resyncing:",
		"joining":              "dropping: drop-opened commit drop-after-join waits",
		"removed":              "removed:",
	}},
	{"fail, lost", map[string]string{
		"in-sync":              "dropping: conn-closed dirty-new dirty-all drop-opened commit waits lost",
		"in-sync, unconnected": "dropping: dirty-new dirty-all drop-opened commit waits lost",
		"dropping":             "dropping: dirty-all waits lost",
		"dropping, joining":    "dropping: dirty-all compare-off waits lost",
		"out-of-sync":          "out-of-sync: dirty-all compare-off lost",
		"out-of-sync, claimed": "out-of-sync: dirty-all compare-off lost",
		"resyncing":            "out-of-sync: conn-closed dirty-all compare-off unflushed-reset left-resync lost",
		"resyncing, map empty": "out-of-sync: conn-closed dirty-all compare-off unflushed-reset left-resync lost",
		"joining":              "dropping: conn-closed dirty-all compare-off drop-opened commit drop-after-join waits lost",
		"removed":              "removed: dirty-all compare-off lost",
	}},
	{"listedInSync", map[string]string{
		"out-of-sync":          "dropping: drop-opened commit",
		"out-of-sync, claimed": "dropping: drop-opened commit",
		"resyncing":            "dropping: conn-closed drop-opened commit",
		"resyncing, map empty": "dropping: conn-closed drop-opened commit",
	}},
	{"dropUnflushed", map[string]string{
		"dropping":          "dropping: dirty-marked unflushed-reset compare-on map",
		"dropping, joining": "dropping: dirty-marked unflushed-reset map",
	}},
	{"dropCommitted", map[string]string{
		"dropping": "out-of-sync: drop-closed",
		// "dropping, joining": refused, the drop waits for the join
	}},
	{"dropFailed", map[string]string{
		"dropping": "out-of-sync: drop-closed drop-failed",
	}},
	{"claimResync", map[string]string{
		"out-of-sync": "out-of-sync: claimed",
	}},
	{"releaseResync", map[string]string{
		"dropping, joining":    "dropping: released",
		"out-of-sync, claimed": "out-of-sync: released",
		"resyncing":            "resyncing: released",
		"resyncing, map empty": "resyncing: released",
		"joining":              "joining: released",
	}},
	{"startResync", map[string]string{
		"out-of-sync, claimed": "resyncing: conn-set unflushed-reset",
	}},
	{"regionSent", map[string]string{
		"resyncing":            "resyncing: copied",
		"resyncing, map empty": "resyncing:",
	}},
	{"regionSame", map[string]string{
		"resyncing":            "resyncing: copied",
		"resyncing, map empty": "resyncing:",
	}},
	{"resyncFlushStarted", map[string]string{
		"resyncing":            "resyncing: unflushed-reset",
		"resyncing, map empty": "resyncing: unflushed-reset",
	}},
	{"resyncFlushFailed", map[string]string{
		"dropping":             "dropping: dirty-marked compare-on",
		"dropping, joining":    "dropping: dirty-marked",
		"out-of-sync":          "out-of-sync: dirty-marked",
		"out-of-sync, claimed": "out-of-sync: dirty-marked",
		"resyncing":            "resyncing: unflushed-marked",
		"resyncing, map empty": "resyncing: unflushed-marked",
	}},
	{"resyncFlushed", map[string]string{
		"resyncing":            "resyncing: dirty-cleared",
		"resyncing, map empty": "resyncing:",
	}},
	{"caughtUp", map[string]string{
		"resyncing, map empty": "joining: join-opened commit",
	}},
	{"joinCommitted", map[string]string{
		"dropping, joining": "dropping: join-closed may-have-committed",
		"joining":           "in-sync: dirty-dropped compare-off join-closed may-have-committed",
	}},
	{"joinRefused", map[string]string{
		"dropping, joining": "dropping: join-closed",
		"joining":           "out-of-sync: join-closed",
	}},
	{"joinUnknown", map[string]string{
		"dropping, joining": "dropping: join-closed may-have-committed",
		"joining":           "dropping: conn-closed drop-opened commit join-closed may-have-committed",
	}},
	{"removed", map[string]string{
		"out-of-sync": "removed: map",
	}},
	{"connected", map[string]string{
		"in-sync, unconnected": "in-sync: conn-set",
	}},
	{"wrongCopy", map[string]string{
		"in-sync":              "in-sync: dirty-new dirty-all compare-on",
		"in-sync, unconnected": "in-sync: dirty-new dirty-all compare-on",
		"dropping":             "dropping: dirty-all compare-on",
		"dropping, joining":    "dropping: dirty-all",
		"out-of-sync":          "out-of-sync: dirty-all",
		"out-of-sync, claimed": "out-of-sync: dirty-all",
	}},
	{"suspect", map[string]string{
		"in-sync":              "in-sync:",
		"in-sync, unconnected": "in-sync:",
		"dropping":             "dropping: dirty-all compare-on",
		"dropping, joining":    "dropping: dirty-all",
		"out-of-sync":          "out-of-sync: dirty-all",
		"out-of-sync, claimed": "out-of-sync: dirty-all",
	}},
	{"gaveGeneration", map[string]string{
		"dropping, joining":    "dropping: gen",
		"out-of-sync, claimed": "out-of-sync: gen",
		"resyncing":            "resyncing: gen",
		"resyncing, map empty": "resyncing: gen",
		"joining":              "joining: gen",
	}},
	{"write", map[string]string{
		"in-sync":              "in-sync: unflushed-marked sent",
		"in-sync, unconnected": "in-sync: unflushed-marked sent",
		"dropping":             "dropping: dirty-marked marked waits",
		"dropping, joining":    "dropping: dirty-marked marked waits",
		"out-of-sync":          "out-of-sync: dirty-marked marked",
		"out-of-sync, claimed": "out-of-sync: dirty-marked marked",
		"resyncing":            "resyncing: unflushed-marked sent",
		"resyncing, map empty": "resyncing: unflushed-marked sent",
		"joining":              "joining: unflushed-marked sent",
		"removed":              "removed:",
	}},
	{"flush", map[string]string{
		"in-sync":              "in-sync: unflushed-reset sent",
		"in-sync, unconnected": "in-sync: unflushed-reset sent",
		"dropping":             "dropping: waits",
		"dropping, joining":    "dropping: waits",
		"out-of-sync":          "out-of-sync:",
		"out-of-sync, claimed": "out-of-sync:",
		"resyncing":            "resyncing: unflushed-reset sent",
		"resyncing, map empty": "resyncing: unflushed-reset sent",
		"joining":              "joining: unflushed-reset sent",
		"removed":              "removed:",
	}},
	{"flushFailed", map[string]string{
		"in-sync":              "in-sync: unflushed-marked",
		"in-sync, unconnected": "in-sync: unflushed-marked",
		// A copy that failed meanwhile: into its map, not into an
		// unflushed set its next resync empties (invariant 8).
		"dropping":             "dropping: dirty-marked",
		"dropping, joining":    "dropping: dirty-marked",
		"out-of-sync":          "out-of-sync: dirty-marked",
		"out-of-sync, claimed": "out-of-sync: dirty-marked",
		"resyncing":            "resyncing: unflushed-marked",
		"resyncing, map empty": "resyncing: unflushed-marked",
		"joining":              "joining: unflushed-marked",
		"removed":              "removed: dirty-marked",
	}},
	{"repairWrite", map[string]string{
		"in-sync": "in-sync: unflushed-marked",
	}},
	{"closeConn", map[string]string{
		"in-sync":              "in-sync: conn-closed",
		"in-sync, unconnected": "in-sync:",
		"dropping":             "dropping:",
		"dropping, joining":    "dropping:",
		"out-of-sync":          "out-of-sync:",
		"out-of-sync, claimed": "out-of-sync:",
		"resyncing":            "resyncing: conn-closed",
		"resyncing, map empty": "resyncing: conn-closed",
		"joining":              "joining: conn-closed",
		"removed":              "removed:",
	}},
}

// csSnap is what a copy's state was before an event: its fields, and the
// counts of its maps (which change in place).
type csSnap struct {
	copyState
	connClosed              bool
	dirtyCount, dirtyCopied int64
	unflushedCount          int64
	dropDone, joinDone      bool
}

func isDone(ep *episode) bool {
	if ep == nil {
		return false
	}
	select {
	case <-ep.done:
		return true
	default:
		return false
	}
}

func takeCSSnap(c *copyState) csSnap {
	s := csSnap{copyState: *c, dropDone: isDone(c.drop), joinDone: isDone(c.join)}
	if fc, ok := c.conn.(*fakeConn); ok {
		s.connClosed = fc.closed
	}
	if c.dirty != nil {
		s.dirtyCount, s.dirtyCopied = c.dirty.Count(), c.dirty.copiedCount()
	}
	if c.unflushed != nil {
		s.unflushedCount = c.unflushed.Count()
	}
	return s
}

// csDiff names the changes from b to the copy's state c.
func csDiff(b csSnap, c *copyState) []string {
	var out []string
	add := func(s string) { out = append(out, s) }
	// The connection.
	if bc, ok := b.conn.(*fakeConn); ok && bc.closed && !b.connClosed {
		add("conn-closed")
		if c.conn == b.conn {
			add("conn-closed-but-kept")
		}
	} else if b.conn != nil && c.conn == nil {
		add("conn-forgotten-unclosed")
	}
	if c.conn != nil && c.conn != b.conn {
		add("conn-set")
	}
	// The dirty map.
	full := func(d *DirtyMap) bool { return d.Count() == d.Regions() }
	switch {
	case b.dirty == nil && c.dirty != nil:
		add("dirty-new")
		if full(c.dirty) {
			add("dirty-all")
		} else if c.dirty.Count() > 0 {
			add("dirty-marked")
		}
	case b.dirty != nil && c.dirty == nil:
		add("dirty-dropped")
	case b.dirty != nil && c.dirty != b.dirty:
		add("dirty-replaced")
	case b.dirty != nil:
		n := c.dirty.Count()
		switch {
		case full(c.dirty) && b.dirtyCount != c.dirty.Regions():
			add("dirty-all")
		case n > b.dirtyCount:
			add("dirty-marked")
		case n < b.dirtyCount:
			add("dirty-cleared")
		}
		if c.dirty.copiedCount() > b.dirtyCopied {
			add("copied")
		}
	}
	// The unflushed set.
	switch {
	case c.unflushed != b.unflushed && c.unflushed == nil:
		add("unflushed-dropped")
	case c.unflushed != b.unflushed:
		add("unflushed-reset")
	case c.unflushed != nil && c.unflushed.Count() > b.unflushedCount:
		add("unflushed-marked")
	}
	// The episodes.
	if c.drop != nil && c.drop != b.drop {
		add("drop-opened")
	}
	if b.drop != nil && !b.dropDone && isDone(b.drop) {
		add("drop-closed")
		if b.drop.err != nil {
			add("drop-failed")
		}
		if c.drop == b.drop {
			add("drop-closed-but-kept")
		}
	} else if b.drop != nil && c.drop != b.drop {
		add("drop-forgotten-open")
	}
	if c.join != nil && c.join != b.join {
		add("join-opened")
	}
	if b.join != nil && !b.joinDone && isDone(b.join) {
		add("join-closed")
		if b.join.mayHaveCommitted {
			add("may-have-committed")
		}
		if c.join == b.join {
			add("join-closed-but-kept")
		}
	} else if b.join != nil && c.join != b.join {
		add("join-forgotten-open")
	}
	// The flags.
	if c.resyncRunning && !b.resyncRunning {
		add("claimed")
	}
	if !c.resyncRunning && b.resyncRunning {
		add("released")
	}
	if c.compare && !b.compare {
		add("compare-on")
	}
	if !c.compare && b.compare {
		add("compare-off")
	}
	if c.wroteGen != b.wroteGen {
		add("gen")
	}
	return out
}

func normOutcome(s string) string {
	if s == "refused" {
		return s
	}
	phase, effects, _ := strings.Cut(s, ":")
	f := strings.Fields(effects)
	slices.Sort(f)
	return strings.TrimSpace(phase + ": " + strings.Join(f, " "))
}

func TestCopyStateTransitions(t *testing.T) {
	for _, name := range csFixtureNames {
		if f := newCSFixture(name); f.stepErr != nil {
			t.Fatalf("fixture %q: a transition on the way refused: %v", name, f.stepErr)
		}
	}
	seen := map[string]bool{}
	for _, tr := range csTransitions {
		ev := csEvents[tr.event]
		if ev == nil {
			t.Fatalf("no event %q", tr.event)
		}
		seen[tr.event] = true
		for fx := range tr.to {
			if !slices.Contains(csFixtureNames, fx) {
				t.Fatalf("%s: no fixture %q", tr.event, fx)
			}
		}
		for _, fx := range csFixtureNames {
			want := "refused"
			if w, ok := tr.to[fx]; ok {
				want = w
			}
			f := newCSFixture(fx)
			before := takeCSSnap(f.c)
			extra, err := ev(f)
			effects := append(csDiff(before, f.c), extra...)
			got := fmt.Sprintf("%s: %s", f.c.phase, strings.Join(effects, " "))
			if err != nil {
				var r *refusal
				if !errors.Is(err, errRefused) || !errors.As(err, &r) {
					t.Errorf("%s from %s: error %v is not a refusal", tr.event, fx, err)
				}
				got = "refused"
				if f.c.phase != before.phase || len(effects) > 0 {
					got = fmt.Sprintf("refused, but changed to %s: %s", f.c.phase, strings.Join(effects, " "))
				}
			}
			if normOutcome(got) != normOutcome(want) {
				t.Errorf("%s from %s:\n got  %s\n want %s", tr.event, fx, normOutcome(got), normOutcome(want))
			}
		}
	}
	for ev := range csEvents {
		if !seen[ev] {
			t.Errorf("event %q has no row in csTransitions", ev)
		}
	}
}

// Each refusal names the transition and the phase it was refused in.
func TestCopyStateRefusalSaysWhat(t *testing.T) {
	f := newCSFixture("in-sync")
	err := f.c.claimResync()
	if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), "claimResync") || !strings.Contains(err.Error(), "in-sync") {
		t.Fatalf("claimResync of an in-sync copy: %v", err)
	}
	if s := copyPhase(42).String(); s != "phase(42)" {
		t.Fatalf("an unknown phase reads %q", s)
	}
}

// In write-through mode a copy has no unflushed set, and a FUA write
// marks none: the transitions that touch it work without.
func TestCopyStateWriteThrough(t *testing.T) {
	m := copyMaps{fresh: func() *DirtyMap { return csMap() }, unflushed: func() *DirtyMap { return nil }}
	cs := inSyncCopy(m)
	c := &cs
	a := &fakeConn{name: "A"}
	if err := c.connected(a); err != nil {
		t.Fatal(err)
	}
	if w := c.routeWrite(0, csRegion, true); !w.send || w.conn != a {
		t.Fatalf("a write to an in-sync copy: %+v", w)
	}
	if fl := c.flushStarted(); !fl.send || fl.snap != nil {
		t.Fatalf("a flush of an in-sync copy: %+v", fl)
	}
	r := c.fail(a, false)
	if c.phase != phaseDropping || r.wait == nil || c.dirty == nil || c.dirty.Count() != 0 || c.unflushed != nil {
		t.Fatalf("after a failure: %s, %+v", c.phase, r)
	}
	d, gen, err := c.dropUnflushed()
	if err != nil || d != c.dirty || gen != 0 || c.compare {
		t.Fatalf("dropUnflushed: %v %d %v compare %v", d, gen, err, c.compare)
	}
}

// No code of the package but copystate.go assigns a field of a copy's
// state (or of its episodes), or builds one field by field: the
// transitions are the only way to change it.
func TestCopyStateOnlyTransitionsAssign(t *testing.T) {
	fields := map[string]bool{}
	for _, typ := range []reflect.Type{reflect.TypeFor[copyState](), reflect.TypeFor[episode]()} {
		for i := range typ.NumField() {
			fields[typ.Field(i).Name] = true
		}
	}
	// Names too common to tell an episode's from another struct's
	// without types: episode.end is their only writer all the same.
	delete(fields, "err")
	delete(fields, "done")
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "copystate.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		assigned := func(e ast.Expr) {
			if sel, ok := ast.Unparen(e).(*ast.SelectorExpr); ok && fields[sel.Sel.Name] {
				t.Errorf("%s: assigns .%s of a copy's state outside its transitions (copystate.go)", fset.Position(sel.Pos()), sel.Sel.Name)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				for _, l := range n.Lhs {
					assigned(l)
				}
			case *ast.IncDecStmt:
				assigned(n.X)
			case *ast.UnaryExpr:
				if n.Op == token.AND {
					assigned(n.X) // &p.dirty: a pointer to a field
				}
			case *ast.CompositeLit:
				if id, ok := n.Type.(*ast.Ident); ok && (id.Name == "copyState" || id.Name == "episode") {
					t.Errorf("%s: builds a %s outside copystate.go", fset.Position(n.Pos()), id.Name)
				}
			}
			return true
		})
	}
	if checked < 10 {
		t.Fatalf("checked %d files: run from the package directory", checked)
	}
}
