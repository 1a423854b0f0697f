// Package backoff computes jittered exponential delays for reconnect loops,
// so a fleet of agents that lost their subscriber does not come back in step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff grows from Initial by Factor up to Max; each delay is drawn
// uniformly from [d/2, d] ("equal jitter").
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Factor  float64

	attempt int
}

// Default suits reconnecting long-lived connections.
func Default() *Backoff {
	return &Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Factor: 2}
}

// Next is the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	d := float64(b.Initial)
	for range b.attempt {
		d *= b.Factor
		if d >= float64(b.Max) {
			d = float64(b.Max)
			break
		}
	}
	b.attempt++
	half := d / 2
	return time.Duration(half + rand.Float64()*half)
}

// Spread is d plus a uniform share of up to frac·d: a fleet waiting the
// same d (a rebalance period, a retry hint, a re-announcement) does not
// act in step.
func Spread(d time.Duration, frac float64) time.Duration {
	return d + time.Duration(rand.Float64()*frac*float64(d))
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Sleep waits for the next delay or ctx; it reports whether to go on.
func (b *Backoff) Sleep(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
