package sim

import (
	"context"
	"fmt"
	"math/rand"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hatgt/hatgt/blockstore"
	"github.com/hatgt/hatgt/cluster"
)

// Fault kinds. Each is injected on a target picked when it runs (the owner
// of a LUN, one of its mirrors, the Raft leader, any node), held for a
// while, then healed; the cluster must heal from it without an operator.
const (
	FaultPowerLoss = "power-loss"     // crash the machine: unflushed disk writes dropped; restart
	FaultKill      = "kill"           // kill -9 the process; restart
	FaultPause     = "pause"          // freeze past the lease, commands queued; resume
	FaultIsolate   = "isolate"        // cut a node off the network; heal
	FaultOneWay    = "one-way-cut"    // the node's outgoing traffic cut, incoming kept; heal
	FaultMinority  = "minority"       // the owner and a minority cut from the majority; heal
	FaultEIO       = "disk-eio"       // a node's disks fail every write with EIO for a while
	FaultENOSPC    = "disk-full"      // a node's disks fail writes with ENOSPC for a while
	FaultBlankDisk = "blank-disk"     // stop a mirror, replace its disks by blank ones, restart
	FaultAmbiguous = "ambiguous-raft" // a node's replication commands commit but report errors
	FaultRestart   = "rolling-restart"
	FaultResyncPL  = "power-loss-in-resync" // power loss of a mirror while it is being resynced
	FaultCutKill   = "cut-then-kill"        // the owner's outgoing traffic stops, then it dies with it held
	FaultLeave     = "leave"                // the owner leaves the cluster; it rejoins as a new machine
	FaultRemove    = "remove"               // the owner dies and is removed; it rejoins as a new machine
)

// Step is one fault of a schedule: its kind, whom it hits (resolved when
// it runs: "owner0" is LUN 0's owner, "mirror1" a mirror of LUN 1,
// "leader", "any"), and how long it is held.
type Step struct {
	Kind   string
	Target string
	Hold   time.Duration
}

func (st Step) String() string {
	return fmt.Sprintf("%s(%s, %v)", st.Kind, st.Target, st.Hold.Round(time.Millisecond))
}

// Schedule draws n steps from seed: the same seed, the same schedule.
func Schedule(seed int64, n int, kinds []string) []Step {
	rng := rand.New(rand.NewSource(seed))
	targets := []string{"owner0", "owner1", "mirror0", "mirror1", "leader", "any"}
	var out []Step
	for i := 0; i < n; i++ {
		st := Step{Kind: kinds[rng.Intn(len(kinds))], Target: targets[rng.Intn(len(targets))],
			Hold: time.Duration(1500+rng.Intn(2000)) * time.Millisecond}
		switch st.Kind {
		case FaultMinority, FaultPause, FaultLeave, FaultRemove, FaultCutKill:
			st.Target = fmt.Sprintf("owner%d", rng.Intn(2))
		case FaultBlankDisk, FaultResyncPL:
			st.Target = fmt.Sprintf("mirror%d", rng.Intn(2))
		case FaultRestart:
			st.Target = "all"
		}
		out = append(out, st)
	}
	return out
}

// AllFaults is every kind a random schedule draws from.
var AllFaults = []string{FaultPowerLoss, FaultKill, FaultPause, FaultIsolate, FaultOneWay, FaultMinority,
	FaultEIO, FaultENOSPC, FaultBlankDisk, FaultAmbiguous, FaultRestart, FaultResyncPL, FaultLeave, FaultRemove, FaultCutKill}

// resolve picks the node a step hits, from the current state.
func (s *Sim) resolve(target string, rng *rand.Rand) *node {
	st := s.state()
	lunOf := func(i int) *cluster.LUN {
		if st == nil || st.Targets[simIQN] == nil {
			return nil
		}
		return st.Targets[simIQN].LUNs[s.luns[i]]
	}
	switch target {
	case "owner0", "owner1":
		if l := lunOf(int(target[5] - '0')); l != nil {
			if n := s.node(l.Owner); n != nil {
				return n
			}
		}
	case "mirror0", "mirror1":
		if l := lunOf(int(target[6] - '0')); l != nil {
			var ms []string
			for _, id := range l.Placement {
				if id != l.Owner {
					ms = append(ms, id)
				}
			}
			if len(ms) > 0 {
				return s.node(ms[rng.Intn(len(ms))])
			}
		}
	case "leader":
		if l := s.leader(); l != nil {
			return l
		}
	}
	return s.nodes[rng.Intn(len(s.nodes))]
}

// inject runs one step: the fault, the hold, and its healing. It returns
// what it did, for the log of the run.
func (s *Sim) inject(st Step, rng *rand.Rand) (string, error) {
	n := s.resolve(st.Target, rng)
	s.count(st.Kind)
	desc := fmt.Sprintf("%s on %s", st.Kind, n.id)
	s.logs.mark("injecting %s", desc)
	switch st.Kind {
	case FaultPowerLoss, FaultKill:
		n.stop(st.Kind == FaultKill, st.Kind == FaultPowerLoss)
		time.Sleep(st.Hold)
		return desc, n.start(false, "")
	case FaultPause:
		n.pause()
		// Past the lease and the failover delay: another node takes over.
		time.Sleep(max(st.Hold, 4500*time.Millisecond))
		n.resume()
	case FaultIsolate:
		s.net.Isolate(n.id)
		time.Sleep(st.Hold)
		s.net.Reconnect(n.id)
	case FaultOneWay:
		for _, o := range s.nodes {
			if o != n {
				s.net.CutOneWay(n.id, o.id)
			}
		}
		time.Sleep(st.Hold)
		s.net.HealAll()
	case FaultMinority:
		// n with the smallest group that is not a majority.
		minority := []string{n.id}
		var majority []string
		for _, o := range s.shuffledNodes(rng) {
			if o == n {
				continue
			}
			if len(minority) < (len(s.nodes)-1)/2 {
				minority = append(minority, o.id)
			} else {
				majority = append(majority, o.id)
			}
		}
		desc = fmt.Sprintf("%s: %v cut from %v", st.Kind, minority, majority)
		s.net.Partition(minority, majority)
		time.Sleep(st.Hold)
		s.net.HealAll()
	case FaultEIO, FaultENOSPC:
		errno := syscall.EIO
		if st.Kind == FaultENOSPC {
			errno = syscall.ENOSPC
		}
		n.setDiskFault(func(op string, off, length int64) error {
			if op == "write" || op == "writefua" || op == "unmap" {
				return errno
			}
			return nil
		})
		time.Sleep(st.Hold)
		n.setDiskFault(nil)
	case FaultBlankDisk:
		n.stop(false, false)
		n.mu.Lock()
		for p, d := range n.disks {
			n.disks[p] = &disk{Crash: blockstore.NewCrash(d.Size()), writeThrough: d.writeThrough}
		}
		n.mu.Unlock()
		time.Sleep(st.Hold)
		return desc, n.start(false, "")
	case FaultAmbiguous:
		n.ambiguous.Store(true)
		// A mirror must go through a drop and a resync meanwhile, for
		// the in-sync commands to be ambiguous: stop one and bring it
		// back while the answers are wrong.
		var m *node
		for _, o := range s.shuffledNodes(rng) {
			if o != n && o != s.leader() {
				m = o
				break
			}
		}
		if m != nil {
			desc += fmt.Sprintf(" (with %s killed and restarted)", m.id)
			m.stop(true, false)
			time.Sleep(st.Hold)
			if err := m.start(false, ""); err != nil {
				n.ambiguous.Store(false)
				return desc, err
			}
			s.waitFor("a resync under ambiguous answers", 10*time.Second, s.healthy)
		}
		time.Sleep(st.Hold)
		n.ambiguous.Store(false)
	case FaultRestart:
		desc = st.Kind
		for _, o := range s.nodes {
			s.logs.mark("restarting %s", o.id)
			o.stop(false, false)
			if err := o.start(false, ""); err != nil {
				return desc, err
			}
			if err := s.waitHealed(s.cfg.HealTimeout); err != nil {
				return desc, fmt.Errorf("after restarting %s: %w", o.id, err)
			}
		}
	case FaultResyncPL:
		// Stop the mirror while writes go on, bring it back, and cut
		// its power as soon as the owner's resync wrote a region to it
		// (in its cache, not flushed yet).
		lun := s.luns[int(st.Target[len(st.Target)-1]-'0')]
		n.stop(true, false)
		time.Sleep(st.Hold)
		before := n.regionWrites(lun)
		// No SYNCHRONIZE CACHE from the workload until the power loss:
		// it would make the resync's writes durable and hide what the
		// resync itself must get right.
		s.noFlush.Store(true)
		defer s.noFlush.Store(false)
		if err := n.start(false, ""); err != nil {
			return desc, err
		}
		if err := s.waitFor("a resync writing to the copy", 20*time.Second, func() (bool, string) {
			return n.regionWrites(lun) > before, "no region written"
		}); err != nil {
			return desc + " (no resync wrote to the copy before the power loss)", nil
		}
		n.stop(false, true)
		time.Sleep(500 * time.Millisecond)
		return desc, n.start(false, "")
	case FaultCutKill:
		// What the owner sends (its writes to the mirrors among it) is
		// held, as on a link that just died; then the owner dies with it
		// unsent: a write it acknowledged must have reached its mirrors
		// before.
		for _, o := range s.nodes {
			if o != n {
				s.net.CutOneWay(n.id, o.id)
			}
		}
		time.Sleep(300 * time.Millisecond)
		n.stop(true, false)
		s.net.HealAll()
		time.Sleep(st.Hold)
		return desc, n.start(false, "")
	case FaultLeave:
		a := n.agent()
		if a == nil {
			return desc, fmt.Errorf("%s is not running", n.id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := a.Node().Leave(ctx, cluster.LeaveOptions{})
		cancel()
		if err != nil {
			return desc, fmt.Errorf("leave: %w", err)
		}
		n.stop(false, false)
		time.Sleep(st.Hold)
		return desc, s.rejoinFresh(n)
	case FaultRemove:
		n.stop(true, false)
		if err := s.removeNode(n.id); err != nil {
			return desc, err
		}
		time.Sleep(st.Hold)
		return desc, s.rejoinFresh(n)
	default:
		return desc, fmt.Errorf("unknown fault %q", st.Kind)
	}
	return desc, nil
}

// removeNode removes a dead node through the leader, retrying while the
// leader waits out its owner lease or is being elected.
func (s *Sim) removeNode(id string) error {
	var last error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if l := s.leader(); l != nil && l.id != id {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			last = l.agent().Node().RemoveNode(ctx, id)
			cancel()
			if last == nil {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("remove %s: %w", id, last)
}

// rejoinFresh brings a node that left (or was removed) back as a new
// machine: empty Raft state, data directory and disks, joining through a
// running member.
func (s *Sim) rejoinFresh(n *node) error {
	n.mu.Lock()
	n.logs = raft.NewInmemStore()
	n.snaps = raft.NewInmemSnapshotStore()
	n.disks = map[string]*disk{}
	n.dir = n.dir + "+"
	n.mu.Unlock()
	for _, o := range s.nodes {
		if o != n && o.agent() != nil {
			return n.start(false, o.addr(portAPI))
		}
	}
	return fmt.Errorf("no member to join through")
}

// resyncing reports whether some LUN's owner is resyncing id's copy.
func (s *Sim) resyncing(id string) bool {
	st := s.state()
	if st == nil || st.Targets[simIQN] == nil {
		return false
	}
	for _, l := range st.Targets[simIQN].LUNs {
		if p := l.Resync[id]; p != nil && !p.Done && p.Epoch == l.Epoch {
			return true
		}
	}
	return false
}

// regionWrites counts the resync writes the node's disk of LUN lun took.
func (n *node) regionWrites(lun uint64) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	var sum int64
	for _, d := range n.disks {
		if d.lun == lun {
			sum += d.regionWrites.Load()
		}
	}
	return sum
}

func (n *node) setDiskFault(f blockstore.Fault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, d := range n.disks {
		d.SetFault(f)
	}
}
