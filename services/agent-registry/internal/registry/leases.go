package registry

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
)

// The subscribers' leases (ADR 014): the latest of each subscriber, which
// vouches for all the streams it holds.
const (
	LeasesStream = "SUBSCRIBERS"
	// maxSubscribers bounds the leases held in memory: a fleet of
	// subscribers is tens, not thousands.
	maxSubscribers = 4096
	// leaseRetention is how long a silent subscriber's last lease stays:
	// its streams are swept long before.
	leaseRetention = 24 * time.Hour
)

// LeasesStreamConfig keeps each subscriber's latest lease.
func LeasesStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: LeasesStream, Description: "Tether subscribers' leases: the latest of each vouches for its agent streams",
		Subjects: []string{subject.SubscriberLeasesAll}, Storage: jetstream.FileStorage, Replicas: replicas,
		MaxMsgsPerSubject: 1, MaxAge: leaseRetention, MaxMsgSize: 4 << 10, Discard: jetstream.DiscardOld,
	}
}

type lease struct {
	incarnations []string
	// at is when the lease was stored, by the NATS server's clock.
	at time.Time
	// expired is set once the lease is past sweeping, so its streams
	// are swept once.
	expired bool
}

// leases is the latest lease of each subscriber, kept from the stream.
type leases struct {
	timeout time.Duration
	log     *slog.Logger
	// sweep is signalled when an incarnation died: its lease expired, or
	// a newer lease no longer names it.
	sweep chan struct{}

	mu sync.RWMutex
	m  map[string]*lease
	// loaded: every lease the stream held when following began is read.
	// Until then a missing lease proves nothing, and nothing is swept.
	loaded bool
}

func newLeases(timeout time.Duration, log *slog.Logger) *leases {
	return &leases{timeout: timeout, log: log, sweep: make(chan struct{}, 1), m: map[string]*lease{}}
}

// follow creates the stream if missing and keeps the latest leases from
// it until ctx ends.
func (l *leases) follow(ctx context.Context, js jetstream.JetStream, replicas int) error {
	stream, err := js.CreateOrUpdateStream(ctx, LeasesStreamConfig(replicas))
	if err != nil {
		return fmt.Errorf("creating stream %s: %w", LeasesStream, err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy})
	if err != nil {
		return fmt.Errorf("following %s: %w", LeasesStream, err)
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		l.markLoaded()
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var ls tetherv1.SubscriberLease
		meta, err := msg.Metadata()
		if err != nil {
			l.log.Error("subscriber lease without metadata dropped", "subject", msg.Subject())
			return
		}
		if proto.Unmarshal(msg.Data(), &ls) != nil || !subject.ValidToken(ls.GetSubscriberId()) {
			l.log.Error("undecodable subscriber lease dropped", "subject", msg.Subject())
		} else {
			l.put(ls.GetSubscriberId(), ls.GetIncarnations(), meta.Timestamp)
		}
		if meta.NumPending == 0 {
			l.markLoaded()
		}
	}, jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return fmt.Errorf("following %s: %w", LeasesStream, err)
	}
	context.AfterFunc(ctx, cc.Stop)
	return nil
}

func (l *leases) markLoaded() {
	l.mu.Lock()
	first := !l.loaded
	l.loaded = true
	l.mu.Unlock()
	if first {
		l.askSweep()
	}
}

func (l *leases) isLoaded() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.loaded
}

// put records a subscriber's lease, and asks for a sweep when an
// incarnation the previous one named is gone.
func (l *leases) put(id string, incarnations []string, at time.Time) {
	l.mu.Lock()
	old, ok := l.m[id]
	if !ok && len(l.m) >= maxSubscribers {
		l.mu.Unlock()
		l.log.Error("too many subscribers; lease ignored", "subscriber", id, "limit", maxSubscribers)
		return
	}
	if ok && at.Before(old.at) {
		l.mu.Unlock()
		return
	}
	l.m[id] = &lease{incarnations: slices.Clone(incarnations), at: at}
	gone := ok && (old.expired || slices.ContainsFunc(old.incarnations, func(inc string) bool { return !slices.Contains(incarnations, inc) }))
	l.mu.Unlock()
	if gone {
		l.askSweep()
	}
}

func (l *leases) askSweep() {
	select {
	case l.sweep <- struct{}{}:
	default:
	}
}

// expire notices leases unrenewed for two timeouts since it last looked,
// and asks for a sweep of their streams: a cost per subscriber, not per
// stream. For the first timeout past expiry the streams show unhealthy
// (a subscriber frozen or cut off for a moment keeps them), then go.
func (l *leases) expire(now time.Time) {
	var any bool
	l.mu.Lock()
	for id, ls := range l.m {
		switch {
		case now.Sub(ls.at) > leaseRetention:
			delete(l.m, id)
		case !ls.expired && now.Sub(ls.at) > 2*l.timeout:
			ls.expired, any = true, true
			l.log.Warn("subscriber lease expired: its streams are swept", "subscriber", id, "incarnations", ls.incarnations, "renewed", ls.at)
		}
	}
	l.mu.Unlock()
	if any {
		l.askSweep()
	}
}

// dead: a stream reported with an incarnation whose subscriber's lease no
// longer names it, or has been unrenewed for two timeouts. It is swept.
func (l *leases) dead(s *tetherv1.AgentStream, now time.Time) bool {
	if s.GetSubscriberIncarnation() == "" {
		return false
	}
	if ok, _ := l.alive(s, now); ok {
		return false
	}
	l.mu.RLock()
	ls, ok := l.m[s.GetSubscriberId()]
	l.mu.RUnlock()
	return !ok || !slices.Contains(ls.incarnations, s.GetSubscriberIncarnation()) || now.Sub(ls.at) > 2*l.timeout
}

// vouches says whether subscriber's latest lease names incarnation, and
// if so whether it is fresh at now.
func (l *leases) vouches(subscriber, incarnation string, now time.Time) (named, fresh bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	ls, ok := l.m[subscriber]
	if !ok || !slices.Contains(ls.incarnations, incarnation) {
		return false, false
	}
	return true, now.Sub(ls.at) <= l.timeout
}

// alive: a stream reported with an incarnation is alive while its
// subscriber's latest lease is fresh and names that incarnation, or, not
// yet named, while it is younger than both that lease and the timeout (a
// subscriber's first streams come before its first lease is seen).
// Without an incarnation it is a stream of a subscriber older than ADR
// 014, alive by its own heartbeats.
func (l *leases) alive(s *tetherv1.AgentStream, now time.Time) (bool, int64) {
	inc := s.GetSubscriberIncarnation()
	if inc == "" {
		return heartbeatAlive(s, now, l.timeout)
	}
	l.mu.RLock()
	ls, ok := l.m[s.GetSubscriberId()]
	var named bool
	var at time.Time
	if ok {
		named, at = slices.Contains(ls.incarnations, inc), ls.at
	}
	l.mu.RUnlock()
	if named {
		return now.Sub(at) <= l.timeout, at.Unix()
	}
	connected := time.Unix(s.GetConnectedUnix(), 0)
	young := now.Sub(connected) <= l.timeout+time.Second && (!ok || !connected.Before(at.Truncate(time.Second)))
	return young, s.GetConnectedUnix()
}
