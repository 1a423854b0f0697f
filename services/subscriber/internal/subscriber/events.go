package subscriber

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
)

// Events receives what happens to agent streams, for agent-registry: a
// stream connected, disconnected, and still alive (heartbeats). It must not
// block: a NATS outage may lose events, never stall an agent.
type Events interface {
	Report(ev *tetherv1.AgentEvent)
}

func (s *Server) event(sess *session, ev *tetherv1.AgentEvent) {
	s.report(sess.cluster, sess.id, ev)
}

// report stamps ev as this subscriber's, now, about session sessionID of
// cluster, and sends it.
func (s *Server) report(cluster, sessionID string, ev *tetherv1.AgentEvent) {
	ev.ClusterId, ev.SessionId, ev.SubscriberId = cluster, sessionID, s.cfg.ID
	ev.TimeUnixNano = s.cfg.Now().UnixNano()
	s.cfg.Events.Report(ev)
}

// reportEnded reports the streams an agent says ended (Hello.ended_sessions):
// their subscriber may have died without a word, and the registry should
// not wait for their heartbeats to run out. Only the agent's own cluster
// is touched, whatever it sends.
func (s *Server) reportEnded(sess *session, ended []string) {
	for _, id := range ended {
		if id == sess.id || !subject.ValidToken(id) {
			continue
		}
		s.report(sess.cluster, id, &tetherv1.AgentEvent{Kind: &tetherv1.AgentEvent_Disconnected{Disconnected: &tetherv1.AgentDisconnected{Reason: "the agent reports the stream ended"}}})
	}
}

// Heartbeats reports every open stream every interval until ctx ends, so
// the registry can tell a stream that is alive from one whose subscriber
// died without reporting its end.
func (s *Server) Heartbeats(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		sessions := s.sessionList()
		s.mu.Unlock()
		for _, sess := range sessions {
			if sess.welcomed() {
				s.event(sess, &tetherv1.AgentEvent{Kind: &tetherv1.AgentEvent_Heartbeat{Heartbeat: &tetherv1.AgentHeartbeat{}}})
			}
		}
	}
}

// JetStreamEvents publishes agent events to the stream AGENTS without
// waiting for acknowledgements; the JetStream context's async error
// handler hears of those that fail.
type JetStreamEvents struct {
	JS  jetstream.JetStream
	Log *slog.Logger
}

func (e JetStreamEvents) Report(ev *tetherv1.AgentEvent) {
	subj, err := subject.AgentEvents(ev.GetClusterId())
	if err != nil {
		e.Log.Error("agent event for an invalid cluster id", "err", err)
		return
	}
	if d := ev.GetDisconnected(); d != nil && len(d.Reason) > 256 {
		d.Reason = d.Reason[:256]
	}
	b, err := proto.Marshal(ev)
	if err != nil {
		e.Log.Error("encoding an agent event", "err", err)
		return
	}
	if _, err := e.JS.PublishAsync(subj, b); err != nil {
		e.Log.Warn("agent event not published", "cluster_id", ev.GetClusterId(), "err", err)
	}
}
