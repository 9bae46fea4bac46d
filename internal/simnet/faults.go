package simnet

import "fmt"

// Fault operations take host names. Each takes effect before it returns:
// no byte, FIN, reset or datagram crosses against it afterwards, and what
// it releases (Heal, Resume) is delivered before it returns, as far as
// windows allow. They fail only for an unknown host or a host paired with
// itself.

// Cut takes both directions between a and b down: see CutOneWay.
func (n *Network) Cut(a, b string) error {
	return n.setLinks(false, [2]string{a, b}, [2]string{b, a})
}

// CutOneWay takes the link from → to down, as a dead switch port in one
// direction: stream bytes from → to are held at the sender (TCP
// retransmits) and delivered in order after the heal; datagrams are
// dropped; a dial either way waits, its SYN or SYN-ACK lost. to → from
// still carries.
func (n *Network) CutOneWay(from, to string) error {
	return n.setLinks(false, [2]string{from, to})
}

// Heal brings both directions between a and b up again (a cut made with
// Isolate or Partition too, for this pair only if the hosts are not
// isolated: see Reconnect).
func (n *Network) Heal(a, b string) error {
	return n.setLinks(true, [2]string{a, b}, [2]string{b, a})
}

// HealOneWay brings the link from → to up again.
func (n *Network) HealOneWay(from, to string) error {
	return n.setLinks(true, [2]string{from, to})
}

func (n *Network) setLinks(up bool, pairs ...[2]string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	links := make([]link, 0, len(pairs))
	for _, p := range pairs {
		from, err := n.host(p[0])
		if err != nil {
			return err
		}
		to, err := n.host(p[1])
		if err != nil {
			return err
		}
		if from == to {
			return fmt.Errorf("simnet: cannot cut or heal host %q from itself (use Isolate or Pause)", p[0])
		}
		links = append(links, link{from, to})
	}
	for _, l := range links {
		if up {
			delete(n.cuts, l)
		} else {
			n.cuts[l] = struct{}{}
		}
	}
	n.changed()
	return nil
}

// Partition cuts every link between hosts of different groups, both
// ways. Hosts named in no group keep their links. Heal each pair, or
// HealAll, to undo it.
func (n *Network) Partition(groups ...[]string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	hs := make([][]*Host, len(groups))
	seen := map[*Host]int{}
	for i, g := range groups {
		for _, name := range g {
			h, err := n.host(name)
			if err != nil {
				return err
			}
			if j, ok := seen[h]; ok {
				return fmt.Errorf("simnet: host %q is in partition groups %d and %d", name, j, i)
			}
			seen[h] = i
			hs[i] = append(hs[i], h)
		}
	}
	for i := range hs {
		for j := range hs {
			if i == j {
				continue
			}
			for _, a := range hs[i] {
				for _, b := range hs[j] {
					n.cuts[link{a, b}] = struct{}{}
				}
			}
		}
	}
	n.changed()
	return nil
}

// Isolate cuts host off from every other host, both ways, hosts added
// later included; its own loopback still works. Reconnect undoes it
// (links cut one by one stay cut).
func (n *Network) Isolate(host string) error {
	return n.setHost(host, func(h *Host) { h.isolated = true })
}

// Reconnect undoes Isolate.
func (n *Network) Reconnect(host string) error {
	return n.setHost(host, func(h *Host) { h.isolated = false })
}

// HealAll removes every cut and isolation. Pauses stay.
func (n *Network) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cuts)
	for _, h := range n.hosts {
		h.isolated = false
	}
	n.changed()
}

// Pause freezes host as a SIGSTOP freezes its process: it sends nothing
// (its stream writes are held at it, its datagrams dropped, its dials
// wait) and takes nothing in (its reads, accepts and packet reads wait).
// Its kernel still takes in what peers send, up to its windows and
// datagram queue, then their writes block; peers' dials to it succeed
// and wait in its backlog. Resume lets it all through, in order.
//
// Only the network is frozen: the host's goroutines and timers keep
// running, so its deadlines expire during the pause where a stopped
// process would notice them only after.
func (n *Network) Pause(host string) error {
	return n.setHost(host, func(h *Host) { h.paused = true })
}

// Resume undoes Pause.
func (n *Network) Resume(host string) error {
	return n.setHost(host, func(h *Host) { h.paused = false })
}

// Crash kills host's process as kill -9 does, its kernel staying up:
// every socket it has is gone (operations on them fail with ErrCrashed,
// its listeners' Accept too), its unsent bytes are dropped, and each peer
// gets a reset (ECONNRESET on its next read or write) once the link from
// host to that peer carries. Bytes that reach the host later are
// answered with resets; dials to it are refused until something listens
// again. The host stays usable: a restarted process listens and dials as
// new. Crash ends a pause.
//
// Crash does not stop the process's goroutines: stop the node's code
// too, or it will act as a new process on the host.
func (n *Network) Crash(host string) error {
	return n.setHost(host, func(h *Host) {
		h.paused = false
		for c := range h.conns {
			c.crashed = true
			n.closeConn(c, true)
		}
		for _, l := range h.listeners {
			l.crashed = true
			n.closeListener(l)
		}
		for _, pc := range h.packets {
			pc.crashed = true
			n.closePacket(pc)
		}
		n.st.Crashes++
	})
}

func (n *Network) setHost(name string, f func(*Host)) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, err := n.host(name)
	if err != nil {
		return err
	}
	f(h)
	n.changed()
	return nil
}

// Reachable reports whether the link from → to carries now (not cut, and
// neither end isolated). Pauses do not count.
func (n *Network) Reachable(from, to string) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	a, err := n.host(from)
	if err != nil {
		return false, err
	}
	b, err := n.host(to)
	if err != nil {
		return false, err
	}
	return n.up(a, b), nil
}

// changed delivers what a fault change released and wakes every waiter
// to look again. n.mu is held.
func (n *Network) changed() {
	for p := range n.pipes {
		n.advance(p)
		p.sig.fire()
	}
	for _, h := range n.hosts {
		for _, l := range h.listeners {
			l.sig.fire()
		}
		for _, pc := range h.packets {
			pc.sig.fire()
		}
	}
	n.faults.fire()
}
