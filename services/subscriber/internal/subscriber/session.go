package subscriber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tether-dev/tether/lib/agentcred"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/tunnel"
)

// session is one agent's stream and the requests relayed over it.
type session struct {
	srv     *Server
	id      string
	cluster string
	conn    *tunnel.Conn
	log     *slog.Logger
	// hello is closed once the agent was told it is connected (Welcome),
	// before which no request may go to it (it waits for the Welcome).
	hello chan struct{}
	// announced is what the registry hears of the agent when the stream
	// connects, and again when it is announced under a new incarnation.
	announced *tetherv1.AgentConnected
	// moved is closed when the agent says it has a stream elsewhere (its
	// GoAway); done when the session is closed.
	moved     chan struct{}
	movedOnce sync.Once
	done      chan struct{}

	mu sync.Mutex
	// claims are of the latest credential the agent presented; expiry
	// closes the stream when it passes without a renewal.
	claims  agentcred.Claims
	expiry  *time.Timer
	relays  map[uint64]*relay
	nextID  uint64
	data    *nats.Subscription // the session's own frames, while it relays
	closing bool
	// lastOpen is when the session last took a request.
	lastOpen time.Time
	// probe runs probeIdle while the session relays requests; an idle
	// stream has none (ADR 015).
	probe *time.Timer
}

// relay is one request: where its router listens, and which halves ended.
type relay struct {
	router    string // subject of the router's call
	seq       natslink.Seq
	lastRecv  atomic.Int64
	answered  atomic.Bool // the router knows we hold it: the agent answered, or the mutation was acked
	ack       *time.Timer // acks a slow answer; nil for a mutation, acked at once
	span      trace.Span
	agentDone bool // the agent sent its end, or a Reset
	routerEnd bool // the router sent its end
	start     time.Time
}

func newSession(srv *Server, conn *tunnel.Conn, hello *tetherv1.Hello, claims agentcred.Claims) *session {
	id := subject.NewSession(srv.process)
	s := &session{
		srv: srv, id: id, cluster: hello.ClusterId, conn: conn, claims: claims,
		log:    srv.log.With("cluster_id", hello.ClusterId, "session_id", id),
		relays: map[uint64]*relay{}, nextID: 1,
		moved: make(chan struct{}), done: make(chan struct{}), hello: make(chan struct{}),
		announced: &tetherv1.AgentConnected{AgentVersion: hello.AgentVersion, KubernetesVersion: hello.KubernetesVersion},
	}
	s.expiry = time.AfterFunc(claims.Expires.Sub(srv.cfg.Now()), s.expired)
	return s
}

// welcomed reports whether the agent was told it is connected.
func (s *session) welcomed() bool { return isClosed(s.hello) }

func (s *session) uid() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims.ClusterUID
}

// expired closes a stream whose credential ran out without a renewal.
func (s *session) expired() {
	s.srv.metrics.refused.WithLabelValues("expired").Inc()
	s.log.Warn("agent credential expired without renewal: closing the stream")
	s.close("agent credential expired")
	s.conn.Abort()
}

// handle takes every frame from the agent: its renewed credentials, and
// the frames of requests.
func (s *session) handle(f *tetherv1.Frame) error {
	if c := f.GetCredential(); c != nil {
		return s.renew(c.GetToken())
	}
	if f.GetGoAway() != nil {
		s.agentMoved()
		return nil
	}
	return s.fromAgent(f)
}

// agentMoved: the agent has another stream now, so new requests go there
// (the subscription's drain lets NATS deliver them to the other
// subscriber); those in flight here finish.
func (s *session) agentMoved() {
	s.movedOnce.Do(func() {
		s.log.Info("agent moved to another stream; finishing the requests in flight here")
		s.stopListening()
		close(s.moved)
		go s.closeWhenIdle()
	})
}

// closeWhenIdle ends a session that takes no new requests once those in
// flight are done, or MoveTimeout has passed: a watch would keep it for
// ever, and a router resumes it on the agent's other stream (the reset is
// UNAVAILABLE). The agent waits for that.
func (s *session) closeWhenIdle() {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.MoveTimeout)
	defer cancel()
	err := waitFor(ctx, func() bool { return s.closed() || s.len() == 0 })
	if s.closed() {
		return
	}
	if err != nil {
		s.log.Info("closing the stream the agent left, with requests still open", "in_flight", s.len())
	}
	s.close("the agent moved to another stream")
	s.conn.Abort()
}

// closed reports whether the session was closed.
func (s *session) closed() bool { return isClosed(s.done) }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// renew takes a fresh credential on the open stream. One that does not
// check out, or names another cluster, ends the stream: the agent is
// either broken or not who it said.
func (s *session) renew(token string) error {
	c, err := s.srv.cfg.Credentials.Verify(token, s.srv.cfg.Now())
	if err != nil {
		s.srv.metrics.refused.WithLabelValues("invalid_credential").Inc()
		return fmt.Errorf("renewed credential refused: %w", err)
	}
	s.mu.Lock()
	same := c.ClusterID == s.claims.ClusterID && c.ClusterUID == s.claims.ClusterUID
	if same {
		s.claims = c
		s.expiry.Reset(c.Expires.Sub(s.srv.cfg.Now()))
	}
	s.mu.Unlock()
	if !same {
		s.srv.metrics.refused.WithLabelValues("wrong_cluster").Inc()
		return fmt.Errorf("renewed credential is for cluster %q, not %q", c.ClusterID, s.cluster)
	}
	s.log.Info("agent credential renewed", "credential_id", c.ID, "expires", c.Expires)
	return nil
}

// listen takes the cluster's requests (listeners.join, which flushes, so
// routers see the interest before the agent is told it is connected). The
// session's own frames are subscribed to with its first request.
func (s *session) listen() error {
	return s.srv.listeners.join(s)
}

// subscribe makes sure the session's frames are subscribed to, before
// anything of a request goes to its router (which then knows where to
// send them): NATS takes a connection's SUB before its later PUBs. Called
// with s.mu held. An idle session drops the subscription (probeIdle), so
// it costs no goroutine.
func (s *session) subscribe() error {
	s.lastOpen = time.Now()
	if s.data != nil {
		return nil
	}
	data, err := s.srv.cfg.NATS.Subscribe(subject.SessionWildcard(s.id), s.fromRouter)
	if err != nil {
		return fmt.Errorf("subscribing to session frames: %w", err)
	}
	// The routers' windows bound what a request may have in flight; this
	// bounds the whole session's backlog whatever they do.
	_ = data.SetPendingLimits(64<<10, 256<<20)
	s.data = data
	return nil
}

// stopListening takes no new requests; frames of open ones still flow.
func (s *session) stopListening() {
	s.srv.listeners.leave(s)
}

// close ends the session: routers of open requests hear why at once.
func (s *session) close(why string) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	close(s.done)
	s.expiry.Stop()
	if s.probe != nil {
		s.probe.Stop()
		s.probe = nil
	}
	data := s.data
	s.data = nil
	relays := s.relays
	s.relays = map[uint64]*relay{}
	s.mu.Unlock()
	s.srv.listeners.leave(s)
	if data != nil {
		_ = data.Unsubscribe()
	}
	for id, r := range relays {
		s.toRouter(id, r, tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, why))
		s.finish(r, "agent_lost")
	}
}

// dropRelays resets every request in flight at the agent, keeping the
// session: its link to NATS dropped, so their frames may be lost. It
// returns them, for their routers to be told once the link is back.
func (s *session) dropRelays(why string) []orphan {
	s.mu.Lock()
	relays := s.relays
	s.relays = map[uint64]*relay{}
	s.mu.Unlock()
	out := make([]orphan, 0, len(relays))
	for id, r := range relays {
		_ = s.conn.Send(tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, why))
		s.finish(r, "nats_lost")
		out = append(out, orphan{sess: s, id: id, r: r})
	}
	return out
}

// orphan is a request dropped while NATS was away, whose router has not
// heard yet.
type orphan struct {
	sess *session
	id   uint64
	r    *relay
}

func (s *session) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.relays)
}

// open takes a new request from a router and hands it to the agent.
func (s *session) open(m *nats.Msg) {
	f, err := tunnel.Decode(m.Data)
	if err != nil || f.GetOpen() == nil {
		s.log.Warn("refusing a malformed request", "err", err)
		natslink.Refuse(s.srv.cfg.NATS, m, fmt.Sprintf("malformed request: %v", err))
		return
	}
	open := f.GetOpen()
	if open.ClusterId != s.cluster {
		natslink.Refuse(s.srv.cfg.NATS, m, "request for another cluster")
		return
	}
	s.log.Debug("request taken", "request_id", open.RequestId, "attempt", open.Attempt)
	ctx := s.srv.cfg.Propagator.Extract(context.Background(), propagation.HeaderCarrier(m.Header))
	_, span := s.srv.cfg.Tracer.Start(ctx, "subscriber relay", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("tether.request_id", open.RequestId), attribute.String("tether.cluster_id", open.ClusterId)))
	open.Trace = map[string]string{}
	s.srv.cfg.Propagator.Inject(trace.ContextWithSpan(ctx, span), propagation.MapCarrier(open.Trace))
	open.Tenants = nil // the agent has no use for them

	mutates := tunnel.Mutates(open)
	r := &relay{router: m.Reply, span: span, routerEnd: open.End, start: time.Now()}
	r.seq.Expect(f.Seq)
	r.lastRecv.Store(time.Now().UnixNano())
	r.answered.Store(mutates) // acked below, before the agent has it
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		span.End()
		natslink.Refuse(s.srv.cfg.NATS, m, "agent disconnected")
		return
	}
	if err := s.subscribe(); err != nil {
		s.mu.Unlock()
		span.End()
		s.log.Warn("refusing a request", "err", err)
		natslink.Refuse(s.srv.cfg.NATS, m, "subscriber lost NATS")
		return
	}
	id := s.nextID
	s.nextID += 2
	if !mutates {
		// Tell the router we hold the request if the agent is slow to
		// answer, so the router can probe for us and never waits on a
		// lost request. Set before the relay is in the map, where
		// finish may find it.
		r.ack = time.AfterFunc(natslink.AckDelay, func() {
			if !r.answered.Load() {
				_ = natslink.Ack(s.srv.cfg.NATS, r.router, subject.Session(s.id, id))
			}
		})
	}
	s.relays[id] = r
	if s.probe == nil {
		s.probe = time.AfterFunc(s.srv.cfg.IdleProbe/2, s.probeIdle)
	}
	s.mu.Unlock()
	s.srv.metrics.inflight.Inc()
	if mutates {
		// The router must know which agent stream a mutation reached
		// before the agent can run it: a retry names this stream, and an
		// agent runs a mutation it does not remember only when every
		// stream named is its own (ADR 006). So the ack is at the NATS
		// server before the Open goes on.
		if err := natslink.Ack(s.srv.cfg.NATS, r.router, subject.Session(s.id, id)); err == nil {
			err = s.srv.cfg.NATS.FlushTimeout(time.Second)
		}
		if err != nil {
			s.forget(id)
			s.toRouter(id, r, tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_REFUSED, "subscriber could not reach NATS"))
			s.finish(r, "refused")
			return
		}
	}
	f.StreamId, f.Seq = id, 0
	s.srv.metrics.frames.WithLabelValues("to_agent").Inc()
	select {
	case <-s.hello:
	case <-s.done:
	}
	if err := s.conn.Send(f); err != nil {
		s.forget(id)
		s.toRouter(id, r, tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "agent stream broke"))
		s.finish(r, "agent_lost")
	}
}

// fromRouter relays a frame of an open request to the agent.
func (s *session) fromRouter(m *nats.Msg) {
	id, err := subject.LastNumber(m.Subject)
	if err != nil {
		return
	}
	if natslink.NoResponders(m) {
		// A frame of ours went to a router inbox nobody listens on: that
		// router is gone, and its request with it.
		s.routerGone(id)
		return
	}
	f, err := tunnel.Decode(m.Data)
	if err != nil {
		s.log.Warn("dropping malformed frame from a router", "err", err)
		return
	}
	if id == natslink.SessionProbe {
		// A router checking that this agent stream is still held.
		if f.GetPing() != nil {
			natslink.AnswerPing(s.srv.cfg.NATS, m, true)
		}
		return
	}
	s.mu.Lock()
	r, ok := s.relays[id]
	s.mu.Unlock()
	if f.GetPing() != nil {
		natslink.AnswerPing(s.srv.cfg.NATS, m, ok)
		return
	}
	if !ok {
		natslink.Reset(s.srv.cfg.NATS, m, f, m.Subject, "request is gone")
		return
	}
	if m.Reply != r.router {
		// Only the router that opened the request speaks for it.
		return
	}
	if !r.seq.Received(f) {
		// A frame from the router was lost: the request cannot go on.
		if s.forget(id) {
			s.log.Warn("frames from a router lost on NATS; resetting the request", "stream", id)
			_ = s.conn.Send(tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, natslink.ErrFramesLost))
			s.toRouter(id, r, tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, natslink.ErrFramesLost))
			s.finish(r, "frames_lost")
		}
		return
	}
	r.lastRecv.Store(time.Now().UnixNano())
	f.StreamId, f.Seq = id, 0
	done := false
	switch k := f.Kind.(type) {
	case *tetherv1.Frame_Reset_:
		done = true
	case *tetherv1.Frame_Data:
		if k.Data.End {
			s.mu.Lock()
			r.routerEnd = true
			done = r.agentDone
			s.mu.Unlock()
		}
	}
	s.srv.metrics.frames.WithLabelValues("to_agent").Inc()
	if err := s.conn.Send(f); err != nil {
		if s.forget(id) {
			s.toRouter(id, r, tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "agent stream broke"))
			s.finish(r, "agent_lost")
		}
		return
	}
	if done && s.forget(id) {
		s.finish(r, outcome(f))
	}
}

// fromAgent relays a frame of the agent's to the router of its request.
func (s *session) fromAgent(f *tetherv1.Frame) error {
	s.mu.Lock()
	r, ok := s.relays[f.StreamId]
	s.mu.Unlock()
	if !ok {
		// Late frames for a finished request: the agent learns to stop.
		switch f.Kind.(type) {
		case *tetherv1.Frame_Reset_, *tetherv1.Frame_Window:
			return nil
		}
		return s.conn.Send(tunnel.ResetFrame(f.StreamId, tetherv1.ResetCode_RESET_CODE_CANCELED, "request is gone"))
	}
	r.answered.Store(true)
	done := false
	switch k := f.Kind.(type) {
	case *tetherv1.Frame_Reset_:
		done = true
	case *tetherv1.Frame_Response:
		if k.Response.End {
			done = s.agentEnded(r)
		}
	case *tetherv1.Frame_Data:
		if k.Data.End {
			done = s.agentEnded(r)
		}
	}
	s.toRouter(f.StreamId, r, f)
	if done && s.forget(f.StreamId) {
		s.finish(r, outcome(f))
	}
	return nil
}

func (s *session) agentEnded(r *relay) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.agentDone = true
	return r.routerEnd
}

func (s *session) toRouter(id uint64, r *relay, f *tetherv1.Frame) {
	s.srv.metrics.frames.WithLabelValues("to_router").Inc()
	if err := r.seq.Publish(s.srv.cfg.NATS, r.router, subject.Session(s.id, id), f, nil); err != nil && f.GetReset_() == nil {
		// The router cannot hear us: stop the agent's work too.
		s.log.Warn("relaying to router failed", "err", err)
		_ = s.conn.Send(tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "router unreachable"))
		if s.forget(id) {
			s.finish(r, "router_lost")
		}
	}
}

// forget drops a relay; it reports whether this call did it.
func (s *session) forget(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.relays[id]; !ok {
		return false
	}
	delete(s.relays, id)
	return true
}

func (s *session) finish(r *relay, outcome string) {
	if r.ack != nil {
		r.ack.Stop()
	}
	s.srv.metrics.inflight.Dec()
	s.srv.metrics.requests.WithLabelValues(outcome).Inc()
	r.span.SetAttributes(attribute.String("tether.outcome", outcome))
	r.span.End()
}

func outcome(f *tetherv1.Frame) string {
	if r := f.GetReset_(); r != nil {
		// The agent chooses the code: only the names the protocol knows
		// become label values, so a hostile agent cannot mint series.
		if name, ok := tetherv1.ResetCode_name[int32(r.Code)]; ok {
			return name
		}
		return "other"
	}
	return "ok"
}

// routerGone stops a request whose router went away, at the agent too: a
// read or a watch is cancelled there; a mutation finishes and keeps its
// result (UNAVAILABLE), in case the router was not gone after all (NATS
// answers "no responders" for a moment while a restarted node learns the
// others' subscriptions) and sends it again.
func (s *session) routerGone(id uint64) {
	s.mu.Lock()
	r, ok := s.relays[id]
	s.mu.Unlock()
	if ok && s.forget(id) {
		s.log.Info("router gone; stopping its request at the agent", "stream", id)
		_ = s.conn.Send(tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "router gone"))
		s.finish(r, "router_lost")
	}
}

// probeIdle asks the routers of quiet requests whether they still want them,
// so a router that died does not leave a watch running at the agent. It
// runs every IdleProbe/2 while the session relays anything, or took a
// request in that time; then it drops the session's subscription.
func (s *session) probeIdle() {
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case s.closing:
			s.probe = nil
		case len(s.relays) > 0 || time.Since(s.lastOpen) < s.srv.cfg.IdleProbe/2:
			s.probe.Reset(s.srv.cfg.IdleProbe / 2)
		default:
			s.probe = nil
			if s.data != nil {
				_ = s.data.Unsubscribe()
				s.data = nil
			}
		}
	}()
	cutoff := time.Now().Add(-s.srv.cfg.IdleProbe).UnixNano()
	var ids []uint64
	var relays []*relay
	var subjs []string
	s.mu.Lock()
	for id, r := range s.relays {
		if r.lastRecv.Load() < cutoff {
			ids, relays, subjs = append(ids, id), append(relays, r), append(subjs, r.router)
		}
	}
	s.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	// PingAll's own timeout bounds the probe; one that outlives the
	// session finds nothing left to stop.
	for i, err := range natslink.PingAll(context.Background(), s.srv.cfg.NATS, subjs, 5*time.Second) {
		id, r := ids[i], relays[i]
		if errors.Is(err, natslink.ErrGone) {
			s.routerGone(id)
			continue
		}
		if err == nil {
			r.lastRecv.Store(time.Now().UnixNano())
		}
	}
}
