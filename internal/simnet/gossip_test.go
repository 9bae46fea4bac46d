package simnet

import (
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// states records what a member last heard of each other: alive after a
// join event, dead after a leave event (memberlist does not set the
// Node.State it passes to events).
type states struct {
	mu sync.Mutex
	m  map[string]memberlist.NodeStateType
}

func (s *states) set(n *memberlist.Node, st memberlist.NodeStateType) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[n.Name] = st
}
func (s *states) NotifyJoin(n *memberlist.Node)  { s.set(n, memberlist.StateAlive) }
func (s *states) NotifyLeave(n *memberlist.Node) { s.set(n, memberlist.StateDead) }
func (s *states) NotifyUpdate(*memberlist.Node)  {}

func (s *states) is(name string, st memberlist.NodeStateType) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[name]
	return ok && v == st
}

// Three memberlist agents over GossipTransport: a node cut off is
// reported dead by the other two (its probes' datagrams are dropped, its
// fallback streams held), and after the heal it is alive again in every
// view.
func TestMemberlistOverSimnet(t *testing.T) {
	names := []string{"m1", "m2", "m3"}
	n, hs := newNet(t, Config{}, names...)
	logw := newTestLog(t)
	lists := map[string]*memberlist.Memberlist{}
	views := map[string]*states{}
	var first string
	for _, name := range names {
		tr, err := hs[name].GossipTransport(":7946")
		if err != nil {
			t.Fatal(err)
		}
		cfg := memberlist.DefaultLocalConfig()
		cfg.Name = name
		cfg.Transport = tr
		// Short, but not so short that a loaded machine (-race, other
		// tests) misses probes between healthy members.
		cfg.ProbeInterval = 200 * time.Millisecond
		cfg.ProbeTimeout = 100 * time.Millisecond
		cfg.SuspicionMult = 2
		cfg.GossipInterval = 50 * time.Millisecond
		cfg.PushPullInterval = 500 * time.Millisecond
		cfg.TCPTimeout = 500 * time.Millisecond
		cfg.GossipToTheDeadTime = 10 * time.Second
		cfg.LogOutput = logw
		views[name] = &states{m: map[string]memberlist.NodeStateType{}}
		cfg.Events = views[name]
		ml, err := memberlist.Create(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ml.Shutdown() })
		lists[name] = ml
		if first == "" {
			first = tr.Addr()
		} else if _, err := ml.Join([]string{first}); err != nil {
			t.Fatal(err)
		}
	}
	allSee := func(st memberlist.NodeStateType, who string, by ...string) func() bool {
		return func() bool {
			for _, b := range by {
				if !views[b].is(who, st) {
					return false
				}
			}
			return true
		}
	}
	for _, name := range names {
		eventually(t, name+" alive everywhere", allSee(memberlist.StateAlive, name, names...))
	}

	if err := n.Isolate("m3"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "m3 dead for m1 and m2", allSee(memberlist.StateDead, "m3", "m1", "m2"))
	// m1 and m2 still reach each other (one may suspect the other for a
	// moment on a loaded machine; it refutes).
	eventually(t, "m1 and m2 alive for each other", func() bool {
		return views["m1"].is("m2", memberlist.StateAlive) && views["m2"].is("m1", memberlist.StateAlive)
	})

	if err := n.Reconnect("m3"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "m3 alive again for m1 and m2", allSee(memberlist.StateAlive, "m3", "m1", "m2"))
	eventually(t, "m1 and m2 alive again for m3", func() bool {
		return allSee(memberlist.StateAlive, "m1", "m3")() && allSee(memberlist.StateAlive, "m2", "m3")()
	})
	st := n.Stats()
	t.Logf("network: %d datagrams (%d dropped), %d dials", st.DatagramsSent, st.DatagramsDropped, st.Dials)
}
