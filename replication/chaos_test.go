package replication

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// Writers on their own ranges check invariant 1 after every ack, while
// mirrors are cut, dropped and resynced over and over. At the end every
// copy is in sync and identical.
func TestChaosDropAndResync(t *testing.T) {
	c := newTestCluster(t, 512<<10, "a", "b", "c")
	v := c.open("a", Config{}, nil)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := int64(w) * (128 << 10)
			for i := 0; !stop.Load(); i++ {
				seed := uint64(w<<20 | i)
				n := 4096 * int(1+seed%8)
				off := base + int64(seed*31%24)*4096
				data := pattern(seed, n)
				if _, err := v.WriteAt(data, off); err != nil {
					t.Error(err)
					return
				}
				for _, node := range c.view().InSync {
					if got := c.read(node, off, int64(n)); !bytes.Equal(got, data) {
						t.Errorf("acknowledged write %d of writer %d missing on in-sync %s", i, w, node)
						return
					}
				}
			}
		}()
	}
	for round := range 6 {
		victim := NodeID([]string{"b", "c"}[round%2])
		c.cut("a", victim)
		// A write of the victim's range fails on it and drops it.
		waitUntil(t, func() bool { return !c.view().IsInSync(victim) && hasPeerState(v, victim, "out-of-sync") })
		c.net.Heal("a", victim)
		if err := v.Resync(context.Background(), victim); err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("round %d: resync %s: %v (peers %+v)", round, victim, err, v.Peers())
		}
	}
	stop.Store(true)
	wg.Wait()
	if got := c.view().InSync; len(got) != 3 {
		t.Fatalf("in sync at the end: %v", got)
	}
	c.identical("a", "b", "c")
}
