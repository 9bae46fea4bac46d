package sim

import (
	"sync"
	"time"

	"github.com/hatgt/hatgt/replication"
)

// pausableClock is a node's clock (replication.Clock): the system clock,
// except while the node is paused. Then Now stands still at the moment of
// the pause and no timer fires, as in a stopped process; on Resume, Now
// jumps to the real time (the monotonic clock ran on) and the timers that
// came due meanwhile fire, as after SIGCONT.
type pausableClock struct {
	mu      sync.Mutex
	paused  bool
	at      time.Time // Now while paused
	pending []func()  // timers that came due while paused
}

var _ replication.Clock = (*pausableClock)(nil)

func (c *pausableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused {
		return c.at
	}
	return time.Now()
}

func (c *pausableClock) AfterFunc(d time.Duration, f func()) replication.Timer {
	t := &pausableTimer{}
	t.t = time.AfterFunc(d, func() {
		c.mu.Lock()
		if c.paused {
			c.pending = append(c.pending, func() {
				if !t.stopped() {
					f()
				}
			})
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		f()
	})
	return t
}

// Pause stops the clock.
func (c *pausableClock) Pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.paused {
		c.paused, c.at = true, time.Now()
	}
}

// Resume lets the clock run again and returns the timers that came due
// while it stood: the caller runs them (runTimers) when it chooses, so a
// simulator can let queued commands run first, the order that exposes a
// lease checked only by a timer.
func (c *pausableClock) Resume() (due []func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = false
	due, c.pending = c.pending, nil
	return due
}

func runTimers(due []func()) {
	for _, f := range due {
		go f()
	}
}

type pausableTimer struct {
	mu sync.Mutex
	t  *time.Timer
	s  bool
}

func (t *pausableTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	was := !t.s
	t.s = true
	return t.t.Stop() && was
}

func (t *pausableTimer) stopped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.s
}
