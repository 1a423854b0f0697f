package subscriber

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/tunnel"
)

// relay is one request on its way between its router, on NATS, and the
// agent, on the session's stream. Each side ends its half with an end
// flag; either may end the whole with a Reset:
//
//	open ──router's end──▶ sent ─────agent's end──▶ ended
//	open ──agent's end───▶ answered ──router's end─▶ ended
//	any ──a Reset, a lost frame, a broken link, the session's end──▶ ended
//
// end is the one way out: it takes the relay from the session, stops its
// ack and counts its outcome, once, whoever calls it first. fail is end
// plus telling whichever side did not cause it.
type relay struct {
	sess   *session
	id     uint64 // the stream's number on the agent's stream
	router string // subject of the router's call
	seq    natslink.Seq
	// lastRecv is when the router last sent a frame (Unix nanoseconds),
	// for the idle probe.
	lastRecv atomic.Int64
	// answered: the router knows we hold it (the agent answered, or the
	// mutation was acked).
	answered atomic.Bool
	ack      *time.Timer // acks a slow answer; nil for a mutation, acked at once
	span     trace.Span
	start    time.Time

	mu    sync.Mutex
	state relayState
}

type relayState uint8

const (
	relayOpen     relayState = iota // both halves flow
	relaySent                       // the router sent its end: the request is whole
	relayAnswered                   // the agent sent its end: the response is whole
	relayEnded                      // gone from the session; nothing more is relayed
)

func (st relayState) String() string {
	return [...]string{"open", "sent", "answered", "ended"}[st]
}

// side is who sent a frame.
type side bool

const (
	fromRouter side = false
	fromAgent  side = true
)

// step records frame f from one side and reports whether it ends the
// request: a Reset does, and so does the end of one half when the other
// half has ended.
func (r *relay) step(from side, f *tetherv1.Frame) bool {
	ended := false
	switch k := f.Kind.(type) {
	case *tetherv1.Frame_Reset_:
		return true
	case *tetherv1.Frame_Response:
		ended = from == fromAgent && k.Response.End
	case *tetherv1.Frame_Data:
		ended = k.Data.End
	}
	if !ended {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.state == relayEnded:
		return false
	case from == fromRouter && r.state == relayAnswered, from == fromAgent && r.state == relaySent:
		return true
	case from == fromRouter:
		r.state = relaySent
	default:
		r.state = relayAnswered
	}
	return false
}

func (r *relay) ended() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state == relayEnded
}

// end ends the request with outcome, unless it has ended already; it
// reports whether this call ended it.
func (r *relay) end(outcome string) bool {
	r.mu.Lock()
	if r.state == relayEnded {
		r.mu.Unlock()
		return false
	}
	r.state = relayEnded
	r.mu.Unlock()
	s := r.sess
	s.mu.Lock()
	if s.relays[r.id] == r {
		delete(s.relays, r.id)
	}
	s.mu.Unlock()
	if r.ack != nil {
		r.ack.Stop()
	}
	m := s.srv.metrics
	m.inflight.Dec()
	m.requests.WithLabelValues(outcome).Inc()
	r.span.SetAttributes(attribute.String("tether.outcome", outcome))
	r.span.End()
	return true
}

// fail ends the request for a reason of this hop's, and resets it at the
// agent, at its router, or both, when this call ended it.
func (r *relay) fail(outcome string, code tetherv1.ResetCode, why string, atAgent, atRouter bool) bool {
	if !r.end(outcome) {
		return false
	}
	if atAgent {
		_ = r.sess.conn.Send(tunnel.ResetFrame(r.id, code, why))
	}
	if atRouter {
		r.publish(tunnel.ResetFrame(r.id, code, why))
	}
	return true
}

// publish sends f to the router, numbered; it reports whether it went.
func (r *relay) publish(f *tetherv1.Frame) bool {
	s := r.sess
	s.srv.metrics.toRouter.Inc()
	err := r.seq.Publish(s.srv.cfg.NATS, r.router, subject.Session(s.id, r.id), f, nil)
	if err != nil && f.GetReset_() == nil {
		s.log.Warn("relaying to router failed", "err", err)
	}
	return err == nil
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
	r := &relay{sess: s, router: m.Reply, span: span, start: time.Now()}
	if open.End {
		r.state = relaySent
	}
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
	r.id = s.nextID
	s.nextID += 2
	if !mutates {
		// Tell the router we hold the request if the agent is slow to
		// answer, so the router can probe for us and never waits on a
		// lost request. Set before the relay is in the map, where end
		// may find it.
		r.ack = time.AfterFunc(natslink.AckDelay, func() {
			if !r.answered.Load() {
				_ = natslink.Ack(s.srv.cfg.NATS, r.router, subject.Session(s.id, r.id))
			}
		})
	}
	s.relays[r.id] = r
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
		if err := natslink.Ack(s.srv.cfg.NATS, r.router, subject.Session(s.id, r.id)); err == nil {
			err = s.srv.cfg.NATS.FlushTimeout(time.Second)
		}
		if err != nil {
			r.fail("refused", tetherv1.ResetCode_RESET_CODE_REFUSED, "subscriber could not reach NATS", false, true)
			return
		}
	}
	f.StreamId, f.Seq = r.id, 0
	select {
	case <-s.hello:
	case <-s.done:
	}
	if r.ended() {
		// The session closed meanwhile, and its router heard why.
		return
	}
	s.srv.metrics.toAgent.Inc()
	if err := s.conn.Send(f); err != nil {
		r.fail("agent_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "agent stream broke", false, true)
	}
}

// relay is the open request id, or nil.
func (s *session) relay(id uint64) *relay {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relays[id]
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
	r := s.relay(id)
	if f.GetPing() != nil {
		natslink.AnswerPing(s.srv.cfg.NATS, m, r != nil)
		return
	}
	if r == nil {
		natslink.Reset(s.srv.cfg.NATS, m, f, m.Subject, "request is gone")
		return
	}
	if m.Reply != r.router {
		// Only the router that opened the request speaks for it.
		return
	}
	if !r.seq.Received(f) {
		// A frame from the router was lost: the request cannot go on.
		if r.fail("frames_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, natslink.ErrFramesLost, true, true) {
			s.log.Warn("frames from a router lost on NATS; resetting the request", "stream", id)
		}
		return
	}
	r.lastRecv.Store(time.Now().UnixNano())
	f.StreamId, f.Seq = id, 0
	done := r.step(fromRouter, f)
	s.srv.metrics.toAgent.Inc()
	if err := s.conn.Send(f); err != nil {
		r.fail("agent_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "agent stream broke", false, true)
		return
	}
	if done {
		r.end(outcome(f))
	}
}

// fromAgent relays a frame of the agent's to the router of its request.
func (s *session) fromAgent(f *tetherv1.Frame) error {
	r := s.relay(f.StreamId)
	if r == nil {
		// Late frames for a finished request: the agent learns to stop.
		switch f.Kind.(type) {
		case *tetherv1.Frame_Reset_, *tetherv1.Frame_Window:
			return nil
		}
		return s.conn.Send(tunnel.ResetFrame(f.StreamId, tetherv1.ResetCode_RESET_CODE_CANCELED, "request is gone"))
	}
	r.answered.Store(true)
	done := r.step(fromAgent, f)
	if !r.publish(f) && f.GetReset_() == nil {
		// The router cannot hear us: stop the agent's work too.
		r.fail("router_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "router unreachable", true, false)
		return nil
	}
	if done {
		r.end(outcome(f))
	}
	return nil
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
	if r := s.relay(id); r != nil {
		r.routerGone()
	}
}

func (r *relay) routerGone() {
	if r.fail("router_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "router gone", true, false) {
		r.sess.log.Info("router gone; stopping its request at the agent", "stream", r.id)
	}
}

// endRelays ends every request in flight as the session closes: their
// routers hear why at once.
func (s *session) endRelays(why string) {
	for _, r := range s.relayList() {
		r.fail("agent_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, why, false, true)
	}
}

// dropRelays resets every request in flight at the agent, keeping the
// session: its link to NATS dropped, so their frames may be lost. It
// returns them, for their routers to be told once the link is back
// (tellRouter).
func (s *session) dropRelays(why string) []*relay {
	var out []*relay
	for _, r := range s.relayList() {
		if r.fail("nats_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, why, true, false) {
			out = append(out, r)
		}
	}
	return out
}

// tellRouter resets a request dropped while NATS was away at its router,
// now that the link is back.
func (r *relay) tellRouter(why string) {
	r.publish(tunnel.ResetFrame(r.id, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, why))
}

func (s *session) relayList() []*relay {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*relay, 0, len(s.relays))
	for _, r := range s.relays {
		out = append(out, r)
	}
	return out
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
	var quiet []*relay
	var subjs []string
	for _, r := range s.relayList() {
		if r.lastRecv.Load() < cutoff {
			quiet, subjs = append(quiet, r), append(subjs, r.router)
		}
	}
	if len(quiet) == 0 {
		return
	}
	// PingAll's own timeout bounds the probe; one that outlives the
	// session finds nothing left to stop.
	for i, err := range natslink.PingAll(context.Background(), s.srv.cfg.NATS, subjs, 5*time.Second) {
		r := quiet[i]
		if errors.Is(err, natslink.ErrGone) {
			r.routerGone()
			continue
		}
		if err == nil {
			r.lastRecv.Store(time.Now().UnixNano())
		}
	}
}
