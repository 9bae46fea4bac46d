package sim

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatgt/hatgt/cluster"
	"github.com/hatgt/hatgt/internal/simnet"
	"github.com/hatgt/hatgt/replication"
)

const (
	simToken = "sim-token-0123456789"
	simIQN   = "iqn.2026-12.io.hatgt:sim"
)

// Config sizes a simulation.
type Config struct {
	Nodes int
	// LUNs: one write-through (strict) and one write-back LUN, each with
	// Replicas copies of LUNSize bytes.
	Replicas int
	LUNSize  int64
	// Blocks is how many 4 KiB blocks of each LUN the workload writes,
	// spread over the whole LUN; Writers and Readers per LUN.
	Blocks, Writers, Readers int
	// OpTimeout is how long a client waits for one command before it
	// gives up on the path (the command may still run later).
	OpTimeout  time.Duration
	ResyncRate int64
	// HealTimeout bounds the wait for the cluster to heal after a fault.
	HealTimeout time.Duration
}

// DefaultConfig is what CI runs: three nodes, two 3-copy LUNs of 8 MiB.
func DefaultConfig() Config {
	return Config{
		Nodes: 3, Replicas: 3, LUNSize: 8 << 20,
		Blocks: 512, Writers: 2, Readers: 1,
		OpTimeout: 1500 * time.Millisecond, ResyncRate: 2 << 20,
		HealTimeout: 60 * time.Second,
	}
}

// Sim is a whole hatgt cluster in one process.
type Sim struct {
	cfg   Config
	dir   string
	net   *simnet.Network
	nodes []*node
	logs  *logSink
	hist  *History
	modes []LUNMode
	luns  []uint64 // LUN numbers, by index
	lunID map[uint64]int

	// gate: writers hold it shared per write; compareCopies takes it to
	// stop them while it compares.
	gate    sync.RWMutex
	started time.Time
	// noFlush: the workload sends no SYNCHRONIZE CACHE for a while.
	noFlush atomic.Bool

	mu     sync.Mutex
	counts map[string]int
}

// logSink keeps the cluster's logs of a run (printed when it fails).
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 64<<20 {
		l.buf.Reset() // keep the tail only
		l.buf.WriteString("... (earlier logs dropped)\n")
	}
	return l.buf.Write(p)
}

// mark writes a line of the simulator's own into the logs, so a failure's
// logs show when each fault began and ended.
func (l *logSink) mark(format string, args ...any) {
	fmt.Fprintf(l, "time=%s sim: %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), fmt.Sprintf(format, args...))
}

func (l *logSink) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (s *Sim) count(what string) {
	s.mu.Lock()
	s.counts[what]++
	s.mu.Unlock()
}

// clusterConfig: timings a few times shorter than production's, long
// enough for a loaded 2-CPU machine running five nodes.
func (s *Sim) clusterConfig() cluster.Config {
	c := cluster.DefaultConfig()
	c.HeartbeatTimeout = 200 * time.Millisecond
	c.ElectionTimeout = 200 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 10 * time.Millisecond
	c.OwnerLease = 500 * time.Millisecond
	c.GossipProbeInterval = 200 * time.Millisecond
	c.GossipProbeTimeout = 100 * time.Millisecond
	c.GossipSuspicionMult = 2
	c.ApplyTimeout = 3 * time.Second
	c.ReconcileInterval = 500 * time.Millisecond
	return c
}

func (s *Sim) replicationConfig() replication.Config {
	return replication.Config{AckTimeout: time.Second, RegionSize: 256 << 10}
}

// New starts a cluster of cfg.Nodes nodes (n1 bootstraps, the others
// join it) and creates the LUNs. dir holds the nodes' data directories.
func New(cfg Config, dir string) (*Sim, error) {
	s := &Sim{cfg: cfg, dir: dir, net: simnet.New(simnet.Config{}), logs: &logSink{}, started: time.Now(),
		hist: newHistory(), counts: map[string]int{}, lunID: map[uint64]int{}}
	for i := 1; i <= cfg.Nodes; i++ {
		n, err := newNode(s, fmt.Sprintf("n%d", i))
		if err != nil {
			return nil, err
		}
		s.nodes = append(s.nodes, n)
	}
	if err := s.nodes[0].start(true, ""); err != nil {
		return nil, err
	}
	for _, n := range s.nodes[1:] {
		if err := n.start(false, s.nodes[0].addr(portAPI)); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.waitFor("every node a voter and alive", 30*time.Second, func() (bool, string) {
		st := s.state()
		if st == nil {
			return false, "no state"
		}
		alive := 0
		for _, ni := range st.Nodes {
			if ni.Health == cluster.HealthAlive {
				alive++
			}
		}
		return alive == cfg.Nodes, fmt.Sprintf("%d of %d nodes alive", alive, cfg.Nodes)
	}); err != nil {
		s.Close()
		return s, err
	}
	if err := s.createLUNs(); err != nil {
		s.Close()
		return s, err
	}
	return s, nil
}

// Close stops every node.
func (s *Sim) Close() {
	var wg sync.WaitGroup
	for _, n := range s.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.stop(true, false)
		}()
	}
	wg.Wait()
}

// apply makes a change through any running node.
func (s *Sim) apply(typ string, payload any) error {
	cmd, err := cluster.NewCommand(typ, payload)
	if err != nil {
		return err
	}
	var last error
	for _, n := range s.nodes {
		a := n.agent()
		if a == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := a.Node().Apply(ctx, cmd)
		cancel()
		if err == nil {
			return nil
		}
		last = err
	}
	return last
}

func (s *Sim) createLUNs() error {
	if err := s.apply(cluster.CmdTargetCreate, cluster.TargetCreate{IQN: simIQN}); err != nil {
		return err
	}
	for i, mode := range []string{cluster.IOModeWriteThrough, cluster.IOModeWriteBack} {
		l := cluster.LUN{Target: simIQN, LUN: uint64(i), Size: uint64(s.cfg.LUNSize), SectorSize: BlockSize,
			IOMode: mode, Backing: cluster.BackingFile, Replicas: s.cfg.Replicas}
		if err := s.apply(cluster.CmdLUNCreate, cluster.LUNCreate{LUN: l}); err != nil {
			return fmt.Errorf("create LUN %d: %w", i, err)
		}
		s.luns = append(s.luns, uint64(i))
		s.modes = append(s.modes, LUNMode{Strict: mode == cluster.IOModeWriteThrough})
	}
	st := s.state()
	for i, n := range s.luns {
		s.lunID[st.Targets[simIQN].LUNs[n].ID] = i
	}
	return s.waitHealed(s.cfg.HealTimeout)
}

// state returns the state of the first running node (nil if none runs).
func (s *Sim) state() *cluster.State {
	for _, n := range s.nodes {
		if a := n.agent(); a != nil {
			return a.Node().FSM().State()
		}
	}
	return nil
}

// leaderState returns the state of the Raft leader, or nil.
func (s *Sim) leader() *node {
	for _, n := range s.nodes {
		if a := n.agent(); a != nil && a.Node().IsLeader() {
			return n
		}
	}
	return nil
}

func (s *Sim) node(id string) *node {
	for _, n := range s.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

func (s *Sim) waitFor(what string, limit time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(limit)
	why := ""
	for time.Now().Before(deadline) {
		var ok bool
		if ok, why = cond(); ok {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: not after %v (%s)", what, limit, why)
}

// healthy reports whether the cluster is whole: a leader, every node
// alive in the state, and every LUN with all its copies in sync and
// served by its owner.
func (s *Sim) healthy() (bool, string) {
	l := s.leader()
	if l == nil {
		return false, "no leader"
	}
	st := l.agent().Node().FSM().State()
	for _, n := range s.nodes {
		ni := st.Nodes[n.id]
		if ni == nil || ni.Health != cluster.HealthAlive {
			return false, n.id + " not alive in the state"
		}
	}
	t := st.Targets[simIQN]
	if t == nil {
		return false, "no target"
	}
	for _, n := range s.nodes {
		if a := n.agent(); a != nil && a.Repairing() > 0 {
			return false, n.id + " still compares copies after a takeover"
		}
	}
	for _, num := range s.luns {
		lun := t.LUNs[num]
		if lun == nil {
			return false, fmt.Sprintf("LUN %d missing", num)
		}
		if len(lun.Placement) != lun.Replicas || len(lun.InSync) != len(lun.Placement) {
			return false, fmt.Sprintf("LUN %d: placement %v, in sync %v", num, lun.Placement, lun.InSync)
		}
		if ok, why := s.serves(lun); !ok {
			return false, why
		}
	}
	return true, ""
}

// serves reports whether lun's owner answers a read.
func (s *Sim) serves(lun *cluster.LUN) (bool, string) {
	o := s.node(lun.Owner)
	if o == nil {
		return false, fmt.Sprintf("LUN %d: owner %q", lun.LUN, lun.Owner)
	}
	resp, err := o.execute(simIQN, readCmd(&nexusFor("probe", o.id).n, lun.LUN, 0))
	if err != nil {
		return false, err.Error()
	}
	if resp.Status != 0 {
		return false, fmt.Sprintf("LUN %d on its owner %s: %s", lun.LUN, o.id, senseString(resp))
	}
	return true, ""
}

// waitHealed waits until the cluster is whole again.
func (s *Sim) waitHealed(limit time.Duration) error {
	return s.waitFor("the cluster heals", limit, s.healthy)
}

// ackedWrite is every node's write hook: it records the epoch in which
// an owner acknowledged a write.
func (s *Sim) ackedWrite(lunID, epoch uint64, off int64, data []byte) {
	idx, ok := s.lunID[lunID]
	if !ok || len(data) < 32 {
		return
	}
	for pos := 0; pos+BlockSize <= len(data); pos += BlockSize {
		b := data[pos : pos+BlockSize]
		if binary.BigEndian.Uint32(b) != blockMagic {
			continue
		}
		s.hist.ackedEpoch(idx, binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint64(b[16:]), epoch)
	}
}

// compareCopies stops the writers and compares every LUN's copies, which
// the cluster, healed, lists all in sync; it returns the differences.
func (s *Sim) compareCopies() []string {
	s.gate.Lock()
	defer s.gate.Unlock()
	_, divergent, err := s.settledState(nil)
	if err != nil {
		return []string{err.Error()}
	}
	return divergent
}

// settleFor is how long a difference between in-sync copies must last, the
// cluster healthy and no write sent, to count as a divergence.
const settleFor = 10 * time.Second

// settledState is finalState once the copies settled. A healed cluster
// lists every copy in sync, but the list trails the owner: a mirror that
// failed stays listed until its drop commits (a new leader may be elected
// first), and a write the owner has not acknowledged yet (waiting for
// that commit, its client gone after OpTimeout) is on the owner's copy and
// not on that mirror's. So a difference counts only when it lasts: the
// cluster healthy again and nothing written, for settleFor. An in-sync
// copy that differs stays so (nothing rewrites it with no writes); a
// dropped one is resynced and listed again, equal.
func (s *Sim) settledState(blocks map[blockKey]bool) (map[blockKey]Final, []string, error) {
	var final map[blockKey]Final
	var err error
	divergent := settle(settleFor, func() error { return s.waitHealed(s.cfg.HealTimeout) }, func() []string {
		var d []string
		final, d, err = s.finalState(blocks)
		if err != nil {
			return nil
		}
		if len(d) > 0 {
			s.logs.mark("copies differ, waiting for them to settle: %s", strings.Join(d, "; "))
		}
		return d
	})
	return final, divergent, err
}

// settle calls compare until it finds no difference, healthy (which waits
// for the cluster to heal) returning nil before each call, or until limit
// passed since the first; it returns the last differences. When the
// cluster does not heal it compares once more and says so.
func settle(limit time.Duration, healthy func() error, compare func() []string) []string {
	deadline := time.Now().Add(limit)
	for {
		if err := healthy(); err != nil {
			return append(compare(), "copies compared on an unhealed cluster: "+err.Error())
		}
		d := compare()
		if len(d) == 0 || !time.Now().Before(deadline) {
			return d
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// finalState reads every block the workload wrote from each LUN's
// owner's disk, after checking that all copies are identical.
func (s *Sim) finalState(blocks map[blockKey]bool) (map[blockKey]Final, []string, error) {
	st := s.state()
	if l := s.leader(); l != nil {
		st = l.agent().Node().FSM().State() // what was committed last
	}
	if st == nil {
		return nil, nil, fmt.Errorf("no node runs")
	}
	final := map[blockKey]Final{}
	var divergent []string
	for idx, num := range s.luns {
		lun := st.Targets[simIQN].LUNs[num]
		path := cluster.DefaultBackingPath("", simIQN, num, lun.ID)
		var disks []*disk
		var ids []string
		for _, id := range lun.Placement {
			n := s.node(id)
			n.mu.Lock()
			for p, d := range n.disks {
				if strings.HasSuffix(p, path) {
					disks = append(disks, d)
					ids = append(ids, id)
				}
			}
			n.mu.Unlock()
		}
		if len(disks) == 0 {
			return nil, nil, fmt.Errorf("LUN %d: no disk found on %v", num, lun.Placement)
		}
		owner := slices.Index(ids, lun.Owner)
		if owner < 0 {
			owner = 0
		}
		ref := make([]byte, s.cfg.LUNSize)
		disks[owner].ReadAt(ref, 0)
		for i, d := range disks {
			if i == owner {
				continue
			}
			got := make([]byte, s.cfg.LUNSize)
			d.ReadAt(got, 0)
			if !bytes.Equal(ref, got) {
				divergent = append(divergent, fmt.Sprintf("LUN %d: %s's copy differs from the owner %s's (%s)", num, ids[i], ids[owner], s.diffBlocks(ref, got, idx)))
			}
		}
		for k := range blocks {
			if k.lun != idx {
				continue
			}
			v, _, err := decodeBlock(ref[k.block*BlockSize:(k.block+1)*BlockSize], uint32(idx), k.block)
			final[k] = Final{Version: v, Err: err}
		}
	}
	return final, divergent, nil
}

// diffBlocks describes how copy b differs from the owner's a: how many
// blocks, and the versions each side holds in the first few.
func (s *Sim) diffBlocks(a, b []byte, idx int) string {
	lun := uint32(idx)
	var n int
	var first, writes []string
	for off := 0; off+BlockSize <= len(a); off += BlockSize {
		x, y := a[off:off+BlockSize], b[off:off+BlockSize]
		if bytes.Equal(x, y) {
			continue
		}
		n++
		if len(first) < 4 {
			blk := uint64(off / BlockSize)
			vx, _, ex := decodeBlock(x, lun, blk)
			vy, _, ey := decodeBlock(y, lun, blk)
			first = append(first, fmt.Sprintf("block %d: owner %s, copy %s", blk, versionText(vx, ex), versionText(vy, ey)))
			if len(writes) == 0 && ex == nil && ey == nil {
				writes = s.hist.writesOf(idx, blk, min(vx, vy), max(vx, vy)+1)
			}
		}
	}
	out := fmt.Sprintf("%d blocks differ; %s", n, strings.Join(first, "; "))
	if len(writes) > 4 {
		writes = append([]string{"..."}, writes[len(writes)-4:]...)
	}
	if len(writes) > 0 {
		out += "; the first block's writes: " + strings.Join(writes, "; ")
	}
	return out
}

// versionText is what decodeBlock found: a version, or why none.
func versionText(v uint64, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("v%d", v)
}

// Counts returns the fault counters.
func (s *Sim) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

// FormatCounts prints counters sorted by name.
func FormatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// shuffledNodes returns the nodes in a random order of rng.
func (s *Sim) shuffledNodes(rng *rand.Rand) []*node {
	out := slices.Clone(s.nodes)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
