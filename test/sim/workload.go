package sim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"time"

	"github.com/hatgt/hatgt/scsi"
)

// The workload: on each LUN, Writers clients each own a share of the
// blocks and write new versions of them one after the other (some with
// FUA, and on the write-back LUN a SYNCHRONIZE CACHE every few writes);
// Readers read random written blocks. Every client sends each command to
// the node it last found serving the LUN and moves to the next node when
// it gets an error, an answer from a standby or no answer within
// OpTimeout, as a multipath initiator does.

type nexus struct{ n scsi.Nexus }

// nexusFor is the I_T nexus of a client on a node: one "session" per
// client per path.
func nexusFor(client, node string) *nexus {
	return &nexus{scsi.Nexus{
		InitiatorName: "iqn.2026-12.io.hatgt:sim-" + client,
		InitiatorPort: "iqn.2026-12.io.hatgt:sim-" + client + ",i,0x000000000001",
		TargetName:    simIQN,
	}}
}

func cdb16(op byte, lba uint64, blocks uint32, fua bool) []byte {
	c := make([]byte, 16)
	c[0] = op
	if fua {
		c[1] = 0x08
	}
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

func readCmd(n *scsi.Nexus, lun, block uint64) *scsi.Command {
	return &scsi.Command{Nexus: n, LUN: lun, CDB: cdb16(0x88, block, 1, false), DataInLen: BlockSize}
}

func writeCmd(n *scsi.Nexus, lun, block uint64, data []byte, fua bool) *scsi.Command {
	return &scsi.Command{Nexus: n, LUN: lun, CDB: cdb16(0x8a, block, 1, fua), Data: data, DataOutLen: BlockSize}
}

func syncCmd(n *scsi.Nexus, lun uint64) *scsi.Command {
	return &scsi.Command{Nexus: n, LUN: lun, CDB: []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
}

// sense returns the key, ASC and ASCQ of a CHECK CONDITION.
func sense(r *scsi.Response) (key, asc, ascq byte) {
	if r != nil && len(r.Sense) >= 14 {
		return r.Sense[2] & 0x0f, r.Sense[12], r.Sense[13]
	}
	return 0, 0, 0
}

func senseString(r *scsi.Response) string {
	if r.Status == 0 {
		return "GOOD"
	}
	k, a, q := sense(r)
	return fmt.Sprintf("status %#x sense %x/%02x/%02x", byte(r.Status), k, a, q)
}

const keyUnitAttention = 6

var errTimedOut = errors.New("no answer in time; trying another path")

// client is one initiator of the workload.
type client struct {
	s      *Sim
	name   string
	lun    int
	blocks []uint64          // the blocks it writes (writers) or reads (readers)
	next   map[uint64]uint64 // next version per block (writers)
	path   int               // index of the node it sends to
	rng    *rand.Rand
}

// do sends cmd through the client's current path, retrying a unit
// attention there (the command did not run), and returns the response or
// why there is none. A timeout leaves the command running on the node.
func (c *client) do(build func(n *scsi.Nexus) *scsi.Command) (*scsi.Response, string, error) {
	n := c.s.nodes[c.path]
	nx := nexusFor(c.name, n.id)
	for attempt := 0; ; attempt++ {
		type result struct {
			r   *scsi.Response
			err error
		}
		ch := make(chan result, 1)
		cmd := build(&nx.n)
		go func() {
			r, err := n.execute(simIQN, cmd)
			ch <- result{r, err}
		}()
		select {
		case res := <-ch:
			if res.err != nil {
				return nil, n.id, res.err
			}
			if k, _, _ := sense(res.r); res.r.Status == scsi.StatusCheckCondition && k == keyUnitAttention && attempt < 8 {
				continue
			}
			return res.r, n.id, nil
		case <-time.After(c.s.cfg.OpTimeout):
			return nil, n.id, errTimedOut
		}
	}
}

// failover moves the client to the next path after a failure.
func (c *client) failover() {
	c.path = (c.path + 1) % len(c.s.nodes)
	time.Sleep(time.Duration(20+c.rng.Intn(60)) * time.Millisecond)
}

func outcomeOf(r *scsi.Response, err error) (Outcome, error) {
	switch {
	case errors.Is(err, errTimedOut):
		return TimedOut, err
	case err != nil:
		return Failed, err
	case r.Status != scsi.StatusGood:
		return Failed, errors.New(senseString(r))
	}
	return OK, nil
}

// hot is how many of its blocks a writer writes at a time: the window
// moves on every 250 ms, so the writes stay local (a few regions at a
// time) as most applications' do, and regions go cold: a region a resync
// copied may see no write again for a long while.
const hot = 16

func (c *client) write() {
	c.s.gate.RLock()
	defer c.s.gate.RUnlock()
	window := int(time.Since(c.s.started)/(250*time.Millisecond)) * 4
	b := c.blocks[(window+c.rng.Intn(hot))%len(c.blocks)]
	v := c.next[b]
	c.next[b]++
	fua := c.rng.Intn(4) == 0
	data := encodeBlock(uint32(c.lun), b, v, uint32(len(c.name)))
	op := c.s.hist.invoke(Op{Client: c.name, Kind: OpWrite, LUN: c.lun, Block: b, Version: v, FUA: fua})
	r, node, err := c.do(func(n *scsi.Nexus) *scsi.Command { return writeCmd(n, c.s.luns[c.lun], b, data, fua) })
	op.Node = node
	o, e := outcomeOf(r, err)
	c.s.hist.complete(op, o, 0, e)
	if o != OK {
		c.failover()
	}
}

func (c *client) flush() {
	if c.s.noFlush.Load() {
		return // a stretch without flushes (FaultResyncPL)
	}
	c.s.gate.RLock()
	defer c.s.gate.RUnlock()
	op := c.s.hist.invoke(Op{Client: c.name, Kind: OpFlush, LUN: c.lun})
	r, node, err := c.do(func(n *scsi.Nexus) *scsi.Command { return syncCmd(n, c.s.luns[c.lun]) })
	op.Node = node
	o, e := outcomeOf(r, err)
	c.s.hist.complete(op, o, 0, e)
	if o != OK {
		c.failover()
	}
}

func (c *client) read() {
	b := c.blocks[c.rng.Intn(len(c.blocks))]
	op := c.s.hist.invoke(Op{Client: c.name, Kind: OpRead, LUN: c.lun, Block: b})
	r, node, err := c.do(func(n *scsi.Nexus) *scsi.Command { return readCmd(n, c.s.luns[c.lun], b) })
	op.Node = node
	o, e := outcomeOf(r, err)
	var v uint64
	if o == OK {
		if len(r.Data) < BlockSize {
			o, e = Failed, fmt.Errorf("short read: %d bytes", len(r.Data))
		} else if v, _, e = decodeBlock(r.Data[:BlockSize], uint32(c.lun), b); e != nil {
			v = ^uint64(0) // no version: the checker reports it
		}
	}
	c.s.hist.complete(op, o, v, e)
	if o != OK {
		c.failover()
	}
}

// runWorkload runs the clients until stop is closed and returns the
// blocks that were written.
func (s *Sim) runWorkload(seed int64, stop <-chan struct{}) (written map[blockKey]bool, wait func()) {
	var wg sync.WaitGroup
	written = map[blockKey]bool{}
	stride := uint64(s.cfg.LUNSize/BlockSize) / uint64(s.cfg.Blocks)
	for lun := range s.luns {
		var all []uint64
		for i := 0; i < s.cfg.Blocks; i++ {
			b := uint64(i)*stride + uint64(i%int(max(stride, 1)))
			all = append(all, b)
			written[blockKey{lun, b}] = true
		}
		for w := 0; w < s.cfg.Writers; w++ {
			c := &client{s: s, name: writerName(lun, w), lun: lun, next: map[uint64]uint64{},
				rng: rand.New(rand.NewSource(seed + int64(lun*100+w))), path: w % len(s.nodes)}
			for i, b := range all {
				if i%s.cfg.Writers == w {
					c.blocks = append(c.blocks, b)
					c.next[b] = 1
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					c.write()
					if !s.modes[lun].Strict && n%8 == 7 {
						c.flush()
					}
					time.Sleep(time.Duration(1+c.rng.Intn(3)) * time.Millisecond)
				}
			}()
		}
		for r := 0; r < s.cfg.Readers; r++ {
			c := &client{s: s, name: fmt.Sprintf("r%d.%d", lun, r), lun: lun, blocks: all,
				rng: rand.New(rand.NewSource(seed + int64(lun*100+50+r))), path: r % len(s.nodes)}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					c.read()
					time.Sleep(2 * time.Millisecond)
				}
			}()
		}
	}
	for lun := range s.luns {
		var all []uint64
		for k := range written {
			if k.lun == lun {
				all = append(all, k.block)
			}
		}
		p := &prober{s: s, lun: lun, blocks: all, rng: rand.New(rand.NewSource(seed + int64(lun*100+99)))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.run(stop)
		}()
	}
	return written, wg.Wait
}

// prober reads random blocks through every node at once, every 50 ms,
// without waiting for the previous reads (an active/active multipath
// round robin, or several hosts): so reads are also sent to a node that
// stalls, and wait there, after a newer write was acknowledged elsewhere.
// A stalled owner must not answer them with old data when it wakes.
type prober struct {
	s      *Sim
	lun    int
	blocks []uint64
	rng    *rand.Rand
}

func (p *prober) run(stop <-chan struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		for _, n := range p.s.nodes {
			b := p.blocks[p.rng.Intn(len(p.blocks))]
			name := fmt.Sprintf("p%d.%s", p.lun, n.id)
			wg.Add(1)
			go func() {
				defer wg.Done()
				op := p.s.hist.invoke(Op{Client: name, Node: n.id, Kind: OpRead, LUN: p.lun, Block: b})
				nx := nexusFor(name, n.id)
				var r *scsi.Response
				var err error
				for attempt := 0; attempt < 8; attempt++ {
					r, err = n.execute(simIQN, readCmd(&nx.n, p.s.luns[p.lun], b))
					if k, _, _ := sense(r); err != nil || r.Status != scsi.StatusCheckCondition || k != keyUnitAttention {
						break
					}
				}
				o, e := outcomeOf(r, err)
				var v uint64
				if o == OK {
					if v, _, e = decodeBlock(r.Data[:BlockSize], uint32(p.lun), b); e != nil {
						v = ^uint64(0)
					}
				}
				p.s.hist.complete(op, o, v, e)
			}()
		}
	}
}
