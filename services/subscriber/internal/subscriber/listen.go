package subscriber

import (
	"fmt"
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

// listeners are the queue subscriptions of one subscriber, by cluster.
type listeners struct {
	mu   sync.Mutex
	byID map[string]*listener
	nc   *nats.Conn
}

// listener is one cluster's subscription and the streams that take its
// requests, in turn.
type listener struct {
	sub      *nats.Subscription
	sessions []*session
	next     int
}

func newListeners(nc *nats.Conn) *listeners {
	return &listeners{byID: map[string]*listener{}, nc: nc}
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
		cluster := s.cluster
		sub, err := ls.nc.QueueSubscribe(subj, subject.QueueGroup, func(m *nats.Msg) { ls.dispatch(cluster, m) })
		if err != nil {
			ls.mu.Unlock()
			return fmt.Errorf("subscribing to %s: %w", subj, err)
		}
		// A slow agent holds up only its own cluster's subscription; the
		// windows bound what can pile up here.
		_ = sub.SetPendingLimits(-1, 256<<20)
		l = &listener{sub: sub}
		ls.byID[cluster] = l
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

// dispatch hands a request to the cluster's streams in turn; with none
// left (the last one just moved), it is refused and the router sends it
// elsewhere at once.
func (ls *listeners) dispatch(cluster string, m *nats.Msg) {
	ls.mu.Lock()
	l := ls.byID[cluster]
	var s *session
	if l != nil && len(l.sessions) > 0 {
		l.next = (l.next + 1) % len(l.sessions)
		s = l.sessions[l.next]
	}
	ls.mu.Unlock()
	if s == nil {
		natslink.Refuse(ls.nc, m, "no agent stream here takes requests now")
		return
	}
	s.open(m)
}
