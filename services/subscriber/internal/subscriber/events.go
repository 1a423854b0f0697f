package subscriber

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/tether-dev/tether/lib/backoff"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/subject"
)

// Events is where a subscriber tells agent-registry about its agent
// streams (ADR 014): each stream's connect and end as it happens, and one
// lease, renewed every few seconds, that vouches for all of them.
type Events interface {
	// Report stores ev without blocking: a NATS outage may lose events,
	// never stall an agent.
	Report(ev *tetherv1.AgentEvent)
	// TakeLost reports whether an event could not be stored since it was
	// last asked.
	TakeLost() bool
	// Store stores evs and returns once all are stored.
	Store(ctx context.Context, evs []*tetherv1.AgentEvent) error
	// Lease stores the subscriber's lease and returns once it is stored.
	Lease(ctx context.Context, l *tetherv1.SubscriberLease) error
}

func (s *Server) event(sess *session, ev *tetherv1.AgentEvent) {
	s.report(sess.cluster, sess.id, ev)
}

// report stamps ev as this subscriber's, now, about session sessionID of
// cluster, and sends it.
func (s *Server) report(cluster, sessionID string, ev *tetherv1.AgentEvent) {
	s.stamp(cluster, sessionID, ev)
	s.cfg.Events.Report(ev)
}

func (s *Server) stamp(cluster, sessionID string, ev *tetherv1.AgentEvent) {
	ev.ClusterId, ev.SessionId, ev.SubscriberId = cluster, sessionID, s.cfg.ID
	ev.SubscriberIncarnation = *s.incarnation.Load()
	ev.TimeUnixNano = s.cfg.Now().UnixNano()
}

// reportEnded reports the streams an agent says ended (Hello.ended_sessions):
// their subscriber may have died without a word, and the registry should
// not wait for its lease to run out. Only the agent's own cluster is
// touched, whatever it sends.
func (s *Server) reportEnded(sess *session, ended []string) {
	for _, id := range ended {
		if id == sess.id || !subject.ValidToken(id) {
			continue
		}
		s.report(sess.cluster, id, &tetherv1.AgentEvent{Kind: &tetherv1.AgentEvent_Disconnected{Disconnected: &tetherv1.AgentDisconnected{Reason: "the agent reports the stream ended"}}})
	}
}

// Vouch keeps this subscriber's lease until ctx ends: every interval it
// stores a lease naming its incarnation, so agent-registry holds its
// streams alive without an event per stream. It moves to a new
// incarnation and announces every stream again under it when a report was
// lost, when its lease went unrenewed for two intervals (the registry may
// have swept its streams meanwhile), and once every reannounce (jittered);
// the old incarnation's streams, which then include any whose end was
// lost, are swept by the registry.
func (s *Server) Vouch(ctx context.Context, interval, reannounce time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	due := s.cfg.Now().Add(jitter(reannounce))
	var (
		previous string    // an incarnation whose streams are being announced anew
		renewed  time.Time // the last lease stored
	)
	for {
		now := s.cfg.Now()
		lapsed := !renewed.IsZero() && now.Sub(renewed) > 2*interval
		// TakeLost comes last: a loss during an announcement is repaired
		// by the announcement, which covers every stream.
		if previous != "" || lapsed || !now.Before(due) || s.cfg.Events.TakeLost() {
			if previous == "" {
				previous = *s.incarnation.Load()
				next := newID()
				s.incarnation.Store(&next)
			}
			if err := s.announce(ctx, previous); err != nil {
				// Both stay named: nothing is shown dead meanwhile.
				s.log.Warn("announcing the agent streams under a new incarnation; trying again", "err", err)
			} else {
				previous, due = "", s.cfg.Now().Add(jitter(reannounce))
			}
		}
		if err := s.lease(ctx, previous); err != nil {
			if ctx.Err() == nil {
				s.log.Warn("renewing the subscriber's lease", "err", err)
			}
		} else {
			renewed = s.cfg.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// announce announces every stream under the current incarnation, after a
// lease that names it beside previous.
func (s *Server) announce(ctx context.Context, previous string) error {
	if err := s.lease(ctx, previous); err != nil {
		return err
	}
	s.mu.Lock()
	sessions := s.sessionList()
	s.mu.Unlock()
	evs := make([]*tetherv1.AgentEvent, 0, len(sessions))
	for _, sess := range sessions {
		if !sess.welcomed() || isClosed(sess.done) {
			continue
		}
		ev := &tetherv1.AgentEvent{Kind: &tetherv1.AgentEvent_Connected{Connected: sess.announced}}
		s.stamp(sess.cluster, sess.id, ev)
		evs = append(evs, ev)
	}
	if err := s.cfg.Events.Store(ctx, evs); err != nil {
		return fmt.Errorf("announcing %d streams: %w", len(evs), err)
	}
	s.log.Info("agent streams announced under a new incarnation", "incarnation", *s.incarnation.Load(), "previous", previous, "streams", len(evs))
	return nil
}

// lease stores the lease: the current incarnation, and previous while its
// streams are being announced anew.
func (s *Server) lease(ctx context.Context, previous string) error {
	l := &tetherv1.SubscriberLease{SubscriberId: s.cfg.ID, Incarnations: []string{*s.incarnation.Load()}, TimeUnixNano: s.cfg.Now().UnixNano()}
	if previous != "" && previous != l.Incarnations[0] {
		l.Incarnations = append(l.Incarnations, previous)
	}
	s.mu.Lock()
	l.Streams = uint32(len(s.sessions))
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.cfg.Events.Lease(ctx, l)
}

// jitter spreads d over [d, 1.25 d): subscribers started together do not
// announce their streams together.
func jitter(d time.Duration) time.Duration { return backoff.Spread(d, 0.25) }

// JetStreamEvents stores agent events on the stream AGENTS and leases on
// SUBSCRIBERS. Reports are published without waiting; set Lost as the
// JetStream context's async error handler so failures are noticed.
type JetStreamEvents struct {
	JS   jetstream.JetStream
	Log  *slog.Logger
	lost atomic.Bool
}

// Lost records that a published event was not stored.
func (e *JetStreamEvents) Lost() { e.lost.Store(true) }

func (e *JetStreamEvents) TakeLost() bool { return e.lost.Swap(false) }

func (e *JetStreamEvents) Report(ev *tetherv1.AgentEvent) {
	subj, b, err := encode(ev)
	if err != nil {
		e.Log.Error("agent event not encoded", "err", err)
		return
	}
	if _, err := e.JS.PublishAsync(subj, b); err != nil {
		e.Lost()
		e.Log.Warn("agent event not published", "cluster_id", ev.GetClusterId(), "err", err)
	}
}

func (e *JetStreamEvents) Store(ctx context.Context, evs []*tetherv1.AgentEvent) error {
	msgs := make([]*nats.Msg, 0, len(evs))
	for _, ev := range evs {
		subj, b, err := encode(ev)
		if err != nil {
			return err
		}
		msgs = append(msgs, &nats.Msg{Subject: subj, Data: b})
	}
	return natsconn.StoreAll(ctx, e.JS, msgs)
}

func (e *JetStreamEvents) Lease(ctx context.Context, l *tetherv1.SubscriberLease) error {
	subj, err := subject.SubscriberLease(l.GetSubscriberId())
	if err != nil {
		return err
	}
	b, err := proto.Marshal(l)
	if err != nil {
		return err
	}
	_, err = e.JS.Publish(ctx, subj, b)
	return err
}

func encode(ev *tetherv1.AgentEvent) (string, []byte, error) {
	subj, err := subject.AgentEvents(ev.GetClusterId())
	if err != nil {
		return "", nil, err
	}
	if d := ev.GetDisconnected(); d != nil && len(d.Reason) > 256 {
		d.Reason = d.Reason[:256]
	}
	b, err := proto.Marshal(ev)
	return subj, b, err
}
