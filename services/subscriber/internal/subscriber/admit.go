package subscriber

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// admission bounds how fast a subscriber takes new agent streams. When a
// subscriber dies, its agents all come to the others at once; each stream
// costs a TLS handshake, a credential check, NATS subscriptions and a
// registry event. Beyond the rate, an agent is refused with a hint of
// when to come back, long enough for those refused with it to get in
// first, and agents spread themselves over that time.
type admission struct {
	limiter *rate.Limiter
	rate    float64

	mu sync.Mutex
	// refused counts refusals in the second that began at window, last
	// those of the second before.
	window        time.Time
	refused, last int
}

// newAdmission admits perSecond streams a second, burst at once; nil (no
// bound) when perSecond is not positive.
func newAdmission(perSecond float64, burst int) *admission {
	if perSecond <= 0 {
		return nil
	}
	return &admission{limiter: rate.NewLimiter(rate.Limit(perSecond), max(burst, 1)), rate: perSecond}
}

// maxRetryHint bounds the wait an agent is asked for.
const maxRetryHint = time.Minute

// admit reports whether a stream may start at now, or how long its agent
// should wait.
func (a *admission) admit(now time.Time) (time.Duration, bool) {
	if a == nil || a.limiter.AllowN(now, 1) {
		return 0, true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch since := now.Sub(a.window); {
	case since >= 2*time.Second:
		a.window, a.refused, a.last = now, 0, 0
	case since >= time.Second:
		a.window, a.refused, a.last = now, 0, a.refused
	}
	a.refused++
	backlog := float64(max(a.refused, a.last))
	wait := time.Duration(backlog / a.rate * float64(time.Second))
	return min(max(wait, time.Second), maxRetryHint), false
}
