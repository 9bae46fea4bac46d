package replication

import (
	"context"
	"sync"
	"time"
)

// tokenBucket limits resync and verify traffic to rate bytes per second.
// Tokens may go negative (debt), so a request larger than the burst still
// passes, paid for by the wait that follows.
type tokenBucket struct {
	clock Clock
	rate  float64
	burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newTokenBucket(clock Clock, rate, regionSize int64) *tokenBucket {
	b := &tokenBucket{clock: clock, rate: float64(rate), burst: max(float64(regionSize), float64(rate)/10)}
	b.tokens = b.burst
	b.last = clock.Now()
	return b
}

// wait takes n tokens, sleeping (on the clock) while in debt.
func (b *tokenBucket) wait(ctx context.Context, n int64) error {
	if b.rate <= 0 {
		return ctx.Err()
	}
	b.mu.Lock()
	now := b.clock.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	var d time.Duration
	if b.tokens < 0 {
		d = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	b.mu.Unlock()
	if d <= 0 {
		return ctx.Err()
	}
	ch := make(chan struct{})
	t := b.clock.AfterFunc(d, func() { close(ch) })
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}
