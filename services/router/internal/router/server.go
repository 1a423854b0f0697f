// Package router turns each client request, arriving from a gateway as a
// Proxy stream, into a call over NATS to the subscriber that holds the
// cluster's agent: it checks the cluster, opens the call, retries what is
// safe, and streams both bodies with end-to-end flow control.
package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tether-dev/tether/lib/clusters"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/kstatus"
	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
)

// Catalog authorizes a cluster for a user's tenants. A cluster of another
// tenant must look exactly like one that does not exist.
type Catalog interface {
	Authorize(id string, tenants []string) (clusters.Cluster, bool)
}

// Config configures a Server.
type Config struct {
	// ID names this router; its inbox subjects carry it.
	ID   string
	NATS *nats.Conn
	// NATSUser is the NATS user the router logs in as: its inbox is under
	// tether.rtr.<NATSUser>, the only part of tether.rtr that user may
	// read (ADR 012). Empty: "router", for a NATS without users.
	NATSUser string
	// Catalog says which clusters exist and whose they are: the projection
	// of the cluster events (clusters.Projection).
	Catalog Catalog
	// Window is the credit each call grants for response bytes.
	Window int
	// NoAgentWait is how long a request waits for an agent that is not
	// connected (one that is reconnecting), or for the router's own NATS
	// link, before it fails with 503.
	NoAgentWait time.Duration
	// RetryWindow is how long a request that lost its subscriber or agent
	// keeps being sent again: a read before its answer, a mutation the
	// agent remembers by its request id, a watch from the last event it
	// delivered (each resume has a window of its own). Long enough for an
	// agent to reconnect elsewhere; the client's own deadline still applies.
	RetryWindow time.Duration
	// RetryBodyLimit is the most of a request body kept for another
	// attempt; a mutation with a larger body is not sent again.
	RetryBodyLimit int
	// AckTimeout is how long a request may go without any word from a
	// subscriber (an answer, or its ack) before it counts as lost.
	AckTimeout time.Duration
	// PeerProbe is how long a call may be quiet before the router checks
	// that the agent stream it went to is still held (one ping per
	// stream); a stream nobody listens on twice running, or that answers
	// nothing for four of these, is gone.
	PeerProbe time.Duration
	// IdleProbe is how long a call may be quiet before the router asks the
	// subscriber whether it still has that call.
	IdleProbe time.Duration
	// InboxShards is how many subscriptions the router's inbox is split
	// into, each delivering (and decoding) its calls' frames on its own
	// goroutine; a call's frames stay in order on one. Zero: GOMAXPROCS.
	InboxShards int

	telemetry.Instruments
}

// Server serves ProxyService.
type Server struct {
	tetherv1connect.UnimplementedProxyServiceHandler

	cfg     Config
	log     *slog.Logger
	metrics *metrics

	// inboxes are the prefixes of this process's call subjects, one per
	// shard; call id goes to inboxes[id % len(inboxes)].
	inboxes []string
	// epoch counts the router's NATS disconnects: a call sent in an
	// earlier epoch may have lost frames nobody will resend.
	epoch atomic.Uint64

	// calls are the calls open, by id. Every inbox message looks one up,
	// and the probes walk them all: a sync.Map lets the walk (10,000
	// watches) run without holding up a single lookup.
	calls sync.Map // uint64 → *call
	next  atomic.Uint64
	// mu guards unanswered: the subscriber processes whose last probes
	// failed.
	mu         sync.Mutex
	unanswered map[string]unanswered
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	retries  prometheus.Counter
	resumes  *prometheus.CounterVec
	inflight prometheus.Gauge
}

// New validates cfg and subscribes to the router's inbox.
func New(cfg Config) (*Server, error) {
	if !subject.ValidToken(cfg.ID) || len(cfg.ID) > 48 {
		return nil, fmt.Errorf("router: id %q must match [A-Za-z0-9_-]{1,48}", cfg.ID)
	}
	if cfg.NATS == nil || cfg.Catalog == nil {
		return nil, errors.New("router: NATS and catalog are required")
	}
	if err := cfg.Instruments.Validate(); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	cfg.Window = tunnel.ClampWindow(cfg.Window)
	defaults := []struct {
		d   *time.Duration
		def time.Duration
	}{{&cfg.RetryWindow, 15 * time.Second}, {&cfg.AckTimeout, 5 * time.Second}, {&cfg.PeerProbe, 2 * time.Second}, {&cfg.IdleProbe, 30 * time.Second}}
	for _, d := range defaults {
		if *d.d <= 0 {
			*d.d = d.def
		}
	}
	if cfg.RetryBodyLimit <= 0 {
		cfg.RetryBodyLimit = 1 << 20
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_router_requests_total", Help: "Requests routed, by HTTP code (per cluster: the logs and traces, cluster_id)."}, []string{"code"}),
		retries:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_router_retries_total", Help: "Requests sent again: no agent answered, or a hop was lost before the answer."}),
		resumes:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_router_watch_resumes_total", Help: "Watches that lost a hop, by result: resumed from their last event, or broken off."}, []string{"result"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_router_requests_in_flight", Help: "Calls open."}),
	}
	var err error
	if m.duration, err = telemetry.HopDuration(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	for _, c := range []prometheus.Collector{m.requests, m.retries, m.resumes, m.inflight} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("router: registering metrics: %w", err)
		}
	}
	// The inbox carries a per-process nonce besides the configured id: a
	// restarted router (same pod name) must never receive answers meant for
	// its predecessor's calls.
	if cfg.NATSUser == "" {
		cfg.NATSUser = "router"
	}
	if cfg.InboxShards <= 0 {
		cfg.InboxShards = runtime.GOMAXPROCS(0)
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("router", cfg.ID), metrics: m, unanswered: map[string]unanswered{}}
	// One subscription delivers its messages on one goroutine, which
	// decoded every frame of every call: the shards spread them over as
	// many goroutines as there are cores.
	process := cfg.ID + "-" + nonce()
	var subs []*nats.Subscription
	for i := range cfg.InboxShards {
		inbox, err := subject.RouterInbox(cfg.NATSUser, process+"-"+strconv.Itoa(i))
		if err == nil {
			var sub *nats.Subscription
			if sub, err = cfg.NATS.Subscribe(subject.RouterWildcard(inbox), s.receiveOn(uint64(i), uint64(cfg.InboxShards))); err == nil {
				// The routers' windows bound each call; this bounds a
				// shard's backlog whatever they do.
				_ = sub.SetPendingLimits(-1, max(512<<20/cfg.InboxShards, 64<<20))
				subs = append(subs, sub)
				s.inboxes = append(s.inboxes, inbox)
				continue
			}
		}
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		return nil, fmt.Errorf("router: inbox %d of %d for id %q and NATS user %q: %w", i, cfg.InboxShards, cfg.ID, cfg.NATSUser, err)
	}
	natsconn.OnDisconnect(cfg.NATS, s.natsLost)
	return s, nil
}

// Run probes quiet calls until ctx ends.
func (s *Server) Run(ctx context.Context) {
	peer := time.NewTicker(s.cfg.PeerProbe / 2)
	defer peer.Stop()
	idle := time.NewTicker(s.cfg.IdleProbe / 2)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-peer.C:
			s.probePeers(ctx)
		case <-idle.C:
			s.probeIdle(ctx)
		}
	}
}

// receiveOn is the handler of shard of shards: it takes only the calls
// that shard holds, so each call's frames come in order on one goroutine
// whatever subject a peer publishes to.
func (s *Server) receiveOn(shard, shards uint64) nats.MsgHandler {
	return func(m *nats.Msg) {
		id, err := subject.LastNumber(m.Subject)
		if err != nil || id%shards != shard {
			return
		}
		s.receive(id, m)
	}
}

func (s *Server) receive(id uint64, m *nats.Msg) {
	c := s.call(id)
	if natslink.NoResponders(m) {
		if c != nil {
			c.noResponder()
		}
		return
	}
	f, err := tunnel.Decode(m.Data)
	if err != nil {
		s.log.Warn("dropping malformed frame from a subscriber", "err", err)
		return
	}
	if f.GetPing() != nil {
		if natslink.IsAck(m) {
			if c != nil {
				c.answer(m.Reply)
			}
			return
		}
		natslink.AnswerPing(s.cfg.NATS, m, c != nil)
		return
	}
	if c == nil {
		natslink.Reset(s.cfg.NATS, m, f, m.Subject, "request is gone")
		return
	}
	c.receive(m, f)
}

func nonce() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) newCall() *call {
	id := s.next.Add(1)
	c := &call{id: id, inbox: subject.Router(s.inboxes[id%uint64(len(s.inboxes))], id), nc: s.cfg.NATS, answered: make(chan struct{}),
		epoch: s.epoch.Load(), sent: time.Now()}
	c.s = tunnel.NewStream(1, c, s.cfg.Window)
	c.lastRecv.Store(c.sent.UnixNano())
	c.lastChecked.Store(c.sent.UnixNano())
	s.calls.Store(id, c)
	return c
}

// call is the open call id names, or nil.
func (s *Server) call(id uint64) *call {
	if v, ok := s.calls.Load(id); ok {
		return v.(*call)
	}
	return nil
}

// eachCall runs f on every open call; a call opened or closed meanwhile
// may or may not be seen.
func (s *Server) eachCall(f func(*call)) {
	s.calls.Range(func(_, v any) bool {
		f(v.(*call))
		return true
	})
}

func (s *Server) forget(c *call) {
	s.calls.Delete(c.id)
	c.s.Close(nil)
}

// Proxy serves one client request.
func (s *Server) Proxy(ctx context.Context, gw *connect.BidiStream[tetherv1.Frame, tetherv1.Frame]) error {
	start := time.Now()
	f, err := gw.Receive()
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("waiting for open: %w", err))
	}
	return s.serve(ctx, start, f, gw, gw)
}

// Call serves one client request that has no body.
func (s *Server) Call(ctx context.Context, req *connect.Request[tetherv1.Frame], gw *connect.ServerStream[tetherv1.Frame]) error {
	if !req.Msg.GetOpen().GetEnd() {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("Call takes requests without a body; use Proxy"))
	}
	return s.serve(ctx, time.Now(), req.Msg, gw, nil)
}

// sender is where the answer goes: a Proxy or a Call stream.
type sender interface {
	Send(*tetherv1.Frame) error
}

// receiver is where a request body comes from; nil for Call.
type receiver interface {
	Receive() (*tetherv1.Frame, error)
}

func (s *Server) serve(ctx context.Context, start time.Time, f *tetherv1.Frame, gw sender, body receiver) error {
	if err := tunnel.Validate(f); err != nil || f.GetOpen() == nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("first frame must be a valid Open: %v", err))
	}
	open := f.GetOpen()
	ctx = s.cfg.Propagator.Extract(ctx, propagation.MapCarrier(open.Trace))
	ctx, span := s.cfg.Tracer.Start(ctx, "router "+open.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("tether.request_id", open.RequestId), attribute.String("tether.cluster_id", open.ClusterId)))
	defer span.End()
	log := telemetry.LogWith(ctx, s.log).With("request_id", open.RequestId, "cluster_id", open.ClusterId, "method", open.Method, "path", open.Path)

	code := 0
	defer func() { s.metrics.requests.WithLabelValues(strconv.Itoa(code)).Inc() }()
	if _, ok := s.cfg.Catalog.Authorize(open.ClusterId, open.Tenants); !ok {
		code = http.StatusNotFound
		return sendStatus(gw, kstatus.New(code, fmt.Sprintf("cluster %q not found", open.ClusterId)))
	}
	// Never trusted from the gateway: the router alone counts attempts.
	open.Attempt, open.PreviousSessions = 0, nil
	s.metrics.inflight.Inc()
	defer s.metrics.inflight.Dec()

	r := &request{open: open, kind: kindOf(open), start: start}
	if !open.End && r.kind != upgrade {
		r.body = newReplayBody(s.cfg.RetryBodyLimit)
		go r.body.fill(body)
	}
	c, head, err := s.exchange(ctx, r)
	if c == nil && err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		code = http.StatusServiceUnavailable
		log.Info("no agent", "err", err)
		return sendStatus(gw, kstatus.New(code, err.Error()).WithRetryAfter(time.Second))
	}
	defer func() { s.end(c) }()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st := statusFor(open.ClusterId, err)
		code = st.Code
		log.Info("request failed before the response", "err", err, "attempts", open.Attempt+1)
		return sendStatus(gw, st)
	}
	resp := head.GetResponse()
	if resp == nil {
		code = http.StatusBadGateway
		return sendStatus(gw, kstatus.New(code, "agent answered with a frame that is not a response"))
	}
	if resp.Status == http.StatusSwitchingProtocols && open.Upgrade == "" {
		code = http.StatusBadGateway
		return sendStatus(gw, kstatus.New(code, "agent switched protocols on a request that asked for no upgrade"))
	}
	code = int(resp.Status)
	s.metrics.duration.WithLabelValues("router").Observe(time.Since(start).Seconds())
	pumped := make(chan struct{})
	if r.kind == upgrade {
		go func() {
			defer close(pumped)
			pumpUpgrade(ctx, body, c)
		}()
	}
	plan := planWatch(open, resp, start)
	head.StreamId = 1
	if err := gw.Send(head); err != nil {
		return err
	}
	if resp.End {
		return nil
	}
	if plan != nil {
		return s.relayWatch(ctx, log, r, &c, plan, gw)
	}
	if err := s.relayBody(ctx, log, c, gw); err != nil {
		return err
	}
	// An upgraded connection's two directions end apart: once the agent's
	// has, the client's may still be sending (a half-close), so the call
	// lasts until the client ends too, or goes away.
	if resp.Status == http.StatusSwitchingProtocols {
		select {
		case <-pumped:
		case <-ctx.Done():
		}
	}
	return nil
}

// end lets go of a call: one that did not finish cleanly is reset, so the
// subscriber and the agent stop too.
func (s *Server) end(c *call) {
	c.abandon(tetherv1.ResetCode_RESET_CODE_CANCELED, "client went away")
	s.forget(c)
}

// relayBody passes the response body on as it comes.
func (s *Server) relayBody(ctx context.Context, log *slog.Logger, c *call, gw sender) error {
	for {
		buf, release, err := pooledRead(ctx, c.s)
		if n := len(buf); n > 0 {
			// The end rides with the last bytes when they are already here.
			end := c.s.AtEOF()
			if err := gw.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: buf[:n], End: end}}}); err != nil {
				return err
			}
			if end {
				release()
				return nil
			}
		}
		release()
		if errors.Is(err, io.EOF) {
			return gw.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}})
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Info("response broken off", "err", err)
			}
			return connect.NewError(connect.CodeUnavailable, err)
		}
	}
}

// relayWatch passes a watch on event by event. When the stream breaks
// because a hop was lost, it asks again from the last event delivered and
// goes on; *cp is the call being read, replaced on each resume.
func (s *Server) relayWatch(ctx context.Context, log *slog.Logger, r *request, cp **call, plan *watchPlan, gw sender) error {
	fr := &framer{format: plan.format}
	framing := true
	for {
		c := *cp
		buf, release, err := pooledRead(ctx, c.s)
		if n := len(buf); n > 0 {
			if !framing {
				if err := sendChunks(gw, buf[:n]); err != nil {
					return err
				}
			} else {
				out, evs, ferr := fr.feed(buf[:n])
				if ferr != nil {
					// Not events after all, or one too large to hold:
					// pass the rest through as it comes, unresumable.
					log.Warn("watch passed through without resuming", "err", ferr)
					framing = false
					if err := sendChunks(gw, fr.rest()); err != nil {
						return err
					}
					fr.reset()
				} else {
					if err := sendChunks(gw, out); err != nil {
						return err
					}
					fr.consume(len(out))
					for _, ev := range evs {
						plan.seen(ev)
					}
				}
			}
		}
		release()
		if errors.Is(err, io.EOF) {
			if framing {
				if err := sendChunks(gw, fr.rest()); err != nil {
					return err
				}
			}
			return gw.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}})
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !framing || !plan.resumable() || tunnel.CodeOf(err) != tetherv1.ResetCode_RESET_CODE_UNAVAILABLE {
			s.metrics.resumes.WithLabelValues("broken_off").Inc()
			log.Info("watch broken off", "err", err)
			return connect.NewError(connect.CodeUnavailable, err)
		}
		query, ok := plan.resumeQuery(time.Now())
		if !ok {
			// Its own timeout has passed: the kube-apiserver would have
			// ended it cleanly by now.
			return gw.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}})
		}
		next, err := s.resume(ctx, r, c, query, plan)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.metrics.resumes.WithLabelValues("broken_off").Inc()
			log.Info("watch could not be resumed", "err", err, "resource_version", plan.rv)
			return connect.NewError(connect.CodeUnavailable, err)
		}
		s.metrics.resumes.WithLabelValues("resumed").Inc()
		log.Info("watch resumed", "resource_version", plan.rv, "attempt", r.open.Attempt)
		*cp = next
		fr.reset()
	}
}

// pooledRead waits until st has something, then reads it into a pooled
// chunk, which release gives back: a watch or a log that is quiet for
// minutes holds no 64 KiB buffer meanwhile (the router's memory per watch).
// A chunk not released (a return on a failed send) is the collector's.
func pooledRead(ctx context.Context, st *tunnel.Stream) (b []byte, release func(), err error) {
	if err := st.Wait(ctx); err != nil {
		return nil, func() {}, err
	}
	bp := tunnel.GetChunk()
	n, err := st.ReadContext(ctx, *bp)
	return (*bp)[:n], func() { tunnel.PutChunk(bp) }, err
}

// resume asks again for a watch that lost its hop, from plan.rv; the old
// attempt c is let go. The new response must be the same kind of stream.
func (s *Server) resume(ctx context.Context, r *request, c *call, query string, plan *watchPlan) (*call, error) {
	s.letGo(r, c, "the router resumes the watch elsewhere")
	r.open.Query = query
	// Each resume has the retry window anew: a watch may lose several
	// hops over its life.
	r.start = time.Now()
	next, head, err := s.exchange(ctx, r)
	if err != nil {
		if next != nil {
			s.end(next)
		}
		return nil, err
	}
	resp := head.GetResponse()
	if again := planWatch(r.open, resp, r.start); resp == nil || resp.End || again == nil || again.format != plan.format {
		s.end(next)
		status := uint32(0)
		if resp != nil {
			status = resp.Status
		}
		// 410 Gone, most likely: the point to go on from is too old. The
		// client is told by its stream breaking, watches again itself, and
		// hears the 410 from the kube-apiserver.
		return nil, fmt.Errorf("resuming the watch at resourceVersion %s was answered %d", plan.rv, status)
	}
	return next, nil
}

// statusFor turns a stream that ended before its response into the Status
// a client would expect.
func statusFor(cluster string, err error) kstatus.Status {
	switch tunnel.CodeOf(err) {
	case tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, tetherv1.ResetCode_RESET_CODE_REFUSED:
		return kstatus.New(http.StatusServiceUnavailable, fmt.Sprintf("cluster %q is unavailable: %v", cluster, err)).WithRetryAfter(time.Second)
	case tetherv1.ResetCode_RESET_CODE_PROTOCOL:
		return kstatus.New(http.StatusBadGateway, fmt.Sprintf("agent of cluster %q broke the protocol: %v", cluster, err))
	default:
		return kstatus.New(http.StatusInternalServerError, fmt.Sprintf("request to cluster %q failed: %v", cluster, err))
	}
}

// sendStatus answers the gateway with a Kubernetes Status.
func sendStatus(gw sender, st kstatus.Status) error {
	return gw.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{
		Status: uint32(st.Code), Headers: tunnel.FromHTTP(st.Header(), nil), Body: st.Body(), End: true,
	}}})
}
