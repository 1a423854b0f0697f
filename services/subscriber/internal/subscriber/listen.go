package subscriber

import (
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/subject"
)

// A subscriber takes a cluster's requests with one queue subscription to
// tether.req.<cluster> for all of that cluster's agent streams it holds,
// and hands each request to one of those that still take requests. The
// subscription lives while one does, and ends with Unsubscribe, never
// Drain: nats.go resends a subscription that is draining when its link
// comes back, without the unsubscribe the drain had to hold back, and the
// server then routes requests to a subscription the client has dropped:
// they vanish. One subscription per cluster keeps a handler behind it for
// as long as the server may route there.
//
// The subscriptions deliver into a few shared channels, not a goroutine
// each: an idle cluster costs no goroutine (thousands are held). Each
// cluster's requests then wait in a bounded queue of their own, drained
// by a goroutine that exists while there is something to drain, so a
// slow or frozen agent holds up only its own cluster.

const (
	// shards are the goroutines that take every cluster's requests off
	// NATS; each only queues them, never waits on an agent.
	shards     = 4
	shardDepth = 8192
	// queueLimit bounds the requests waiting for one cluster's streams;
	// beyond it the router is told to go elsewhere at once.
	queueLimit = 1024
)

// listeners are the queue subscriptions of one subscriber, by cluster.
type listeners struct {
	nc   *nats.Conn
	in   [shards]chan *nats.Msg
	seed maphash.Seed
	// open hands a request to a stream: session.open.
	open func(*session, *nats.Msg)

	mu   sync.Mutex
	byID map[string]*listener
}

// listener is one cluster's subscription, the streams that take its
// requests in turn, and the requests waiting for them.
type listener struct {
	sub      *nats.Subscription
	sessions []*session
	next     int
	queue    []*nats.Msg
	draining bool
}

func newListeners(nc *nats.Conn) *listeners {
	ls := &listeners{byID: map[string]*listener{}, nc: nc, seed: maphash.MakeSeed(), open: (*session).open}
	for i := range ls.in {
		ls.in[i] = make(chan *nats.Msg, shardDepth)
		go ls.take(ls.in[i])
	}
	return ls
}

// join makes s take requests for its cluster: subscribed, and flushed so
// that routers see the interest before the agent is told it is connected.
func (ls *listeners) join(s *session) error {
	ls.mu.Lock()
	l := ls.byID[s.cluster]
	if l == nil {
		subj, err := subject.Requests(s.cluster)
		if err != nil {
			ls.mu.Unlock()
			return err
		}
		sub, err := ls.nc.ChanQueueSubscribe(subj, subject.QueueGroup, ls.in[maphash.String(ls.seed, s.cluster)%shards])
		if err != nil {
			ls.mu.Unlock()
			return fmt.Errorf("subscribing to %s: %w", subj, err)
		}
		l = &listener{sub: sub}
		ls.byID[s.cluster] = l
	}
	l.sessions = append(l.sessions, s)
	ls.mu.Unlock()
	if err := ls.nc.FlushTimeout(5 * time.Second); err != nil {
		ls.leave(s)
		return fmt.Errorf("flushing subscriptions: %w", err)
	}
	return nil
}

// leave stops s taking requests; the last stream of a cluster to leave
// ends the subscription.
func (ls *listeners) leave(s *session) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	l := ls.byID[s.cluster]
	if l == nil {
		return
	}
	for i, t := range l.sessions {
		if t == s {
			l.sessions = append(l.sessions[:i], l.sessions[i+1:]...)
			if len(l.sessions) == 0 {
				_ = l.sub.Unsubscribe()
				delete(ls.byID, s.cluster)
			}
			return
		}
	}
}

// take queues each request for its cluster's streams.
func (ls *listeners) take(in <-chan *nats.Msg) {
	for m := range in {
		cluster := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		ls.mu.Lock()
		l := ls.byID[cluster]
		var why string
		switch {
		case l == nil:
			why = "no agent stream here takes requests now"
		case len(l.queue) >= queueLimit:
			why = "too many requests wait for this cluster's agent here"
		default:
			l.queue = append(l.queue, m)
			if !l.draining {
				l.draining = true
				go ls.drain(l)
			}
		}
		ls.mu.Unlock()
		if why != "" {
			natslink.Refuse(ls.nc, m, why)
		}
	}
}

// drain hands a cluster's waiting requests to its streams in turn until
// none waits; with no stream left (the last one just moved), a request is
// refused and the router sends it elsewhere at once.
func (ls *listeners) drain(l *listener) {
	for {
		ls.mu.Lock()
		if len(l.queue) == 0 {
			l.queue, l.draining = nil, false
			ls.mu.Unlock()
			return
		}
		m := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		var s *session
		if len(l.sessions) > 0 {
			l.next = (l.next + 1) % len(l.sessions)
			s = l.sessions[l.next]
		}
		ls.mu.Unlock()
		if s == nil {
			natslink.Refuse(ls.nc, m, "no agent stream here takes requests now")
			continue
		}
		ls.open(s, m)
	}
}
