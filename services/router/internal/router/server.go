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
	"net/url"
	"strconv"
	"strings"
	"sync"
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
	// Catalog says which clusters exist and whose they are: the projection
	// of the cluster events (clusters.Projection).
	Catalog Catalog
	// Window is the credit each call grants for response bytes.
	Window int
	// NoAgentWait is how long a request waits for an agent that is not
	// connected (one that is reconnecting) before it fails with 503.
	NoAgentWait time.Duration
	// ReadRetry is how long a read (GET, HEAD, OPTIONS, not a watch) that
	// lost its subscriber or agent before any answer keeps being sent
	// again: long enough for an agent to reconnect elsewhere. A read
	// changes nothing, so running it twice is harmless.
	ReadRetry time.Duration
	// IdleProbe is how long a call may be quiet before the router asks the
	// subscriber whether it still has it.
	IdleProbe time.Duration

	telemetry.Instruments
}

// Server serves ProxyService.
type Server struct {
	tetherv1connect.UnimplementedProxyServiceHandler

	cfg     Config
	log     *slog.Logger
	metrics *metrics

	inboxID string

	mu    sync.Mutex
	calls map[uint64]*call
	next  uint64
	sub   *nats.Subscription
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	retries  prometheus.Counter
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
	if cfg.ReadRetry <= 0 {
		cfg.ReadRetry = 10 * time.Second
	}
	if cfg.IdleProbe <= 0 {
		cfg.IdleProbe = 30 * time.Second
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_router_requests_total", Help: "Requests routed, by cluster and HTTP code."}, []string{"cluster", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tether_request_duration_seconds", Help: "Time to the response head at this hop.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"hop"}),
		retries:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_router_retries_total", Help: "Requests sent again because no agent answered."}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_router_requests_in_flight", Help: "Calls open."}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.retries, m.inflight} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("router: registering metrics: %w", err)
		}
	}
	// The inbox carries a per-process nonce besides the configured id: a
	// restarted router (same pod name) must never receive answers meant for
	// its predecessor's calls.
	s := &Server{cfg: cfg, log: cfg.Logger.With("router", cfg.ID), metrics: m, calls: map[uint64]*call{}, inboxID: cfg.ID + "-" + nonce()}
	sub, err := cfg.NATS.Subscribe(subject.RouterWildcard(s.inboxID), s.inbox)
	if err != nil {
		return nil, fmt.Errorf("router: subscribing to its inbox: %w", err)
	}
	_ = sub.SetPendingLimits(-1, 512<<20)
	s.sub = sub
	return s, nil
}

// Run probes quiet calls until ctx ends.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.IdleProbe / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.probeIdle(ctx)
		}
	}
}

func (s *Server) inbox(m *nats.Msg) {
	id, err := subject.LastNumber(m.Subject)
	if err != nil {
		return
	}
	s.mu.Lock()
	c := s.calls[id]
	s.mu.Unlock()
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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	c := &call{id: s.next, inbox: subject.Router(s.inboxID, s.next), nc: s.cfg.NATS, answered: make(chan struct{})}
	c.s = tunnel.NewStream(1, c, s.cfg.Window)
	c.lastRecv.Store(time.Now().UnixNano())
	s.calls[c.id] = c
	return c
}

func (s *Server) forget(c *call) {
	s.mu.Lock()
	delete(s.calls, c.id)
	s.mu.Unlock()
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
	defer func() { s.metrics.requests.WithLabelValues(open.ClusterId, strconv.Itoa(code)).Inc() }()
	if _, ok := s.cfg.Catalog.Authorize(open.ClusterId, open.Tenants); !ok {
		code = http.StatusNotFound
		return sendStatus(gw, kstatus.New(code, fmt.Sprintf("cluster %q not found", open.ClusterId)))
	}
	if !s.cfg.NATS.IsConnected() {
		code = http.StatusServiceUnavailable
		return sendStatus(gw, kstatus.New(code, "router has lost its NATS connection").WithRetryAfter(time.Second))
	}
	s.metrics.inflight.Inc()
	defer s.metrics.inflight.Dec()

	c, head, headErr, err := s.dialHead(ctx, open)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		code = http.StatusServiceUnavailable
		log.Info("no agent", "err", err)
		return sendStatus(gw, kstatus.New(code, err.Error()).WithRetryAfter(time.Second))
	}
	defer s.forget(c)
	defer func() {
		if !c.s.Finished() {
			c.s.Reset(tetherv1.ResetCode_RESET_CODE_CANCELED, "client went away")
		}
	}()
	pumped := make(chan struct{})
	if !open.End {
		go func() {
			defer close(pumped)
			s.pumpRequest(ctx, body, c)
		}()
		if head == nil && headErr == nil {
			head, headErr = c.s.Head(ctx)
		}
	}
	// An upgraded connection's two directions end apart: once the agent's
	// has, the client's may still be sending (a half-close), so the call
	// lasts until the client ends too, or goes away.
	bothEnded := func() error {
		if resp := head.GetResponse(); resp.GetStatus() == http.StatusSwitchingProtocols {
			select {
			case <-pumped:
			case <-ctx.Done():
			}
		}
		return nil
	}
	if err := headErr; err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st := statusFor(open.ClusterId, err)
		code = st.Code
		log.Info("request failed before the response", "err", err)
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
	head.StreamId = 1
	if err := gw.Send(head); err != nil {
		return err
	}
	if resp.End {
		return nil
	}
	bp := tunnel.GetChunk()
	defer tunnel.PutChunk(bp)
	buf := *bp
	for {
		n, err := c.s.ReadContext(ctx, buf)
		if n > 0 {
			// The end rides with the last bytes when they are already here.
			end := c.s.AtEOF()
			if err := gw.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: buf[:n], End: end}}}); err != nil {
				return err
			}
			if end {
				return bothEnded()
			}
		}
		if errors.Is(err, io.EOF) {
			if err := gw.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}}); err != nil {
				return err
			}
			return bothEnded()
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Info("response broken off", "err", err)
			}
			return connect.NewError(connect.CodeUnavailable, err)
		}
	}
}

// dialHead dials, and for a request that sends nothing before its answer
// (no body, or an upgrade, whose bytes follow the 101) also waits for the
// head (or the error that ends the stream first). Such a request goes out
// again when nothing can have come of it: an agent that refused it
// (draining) or a subscriber that had lost it did nothing, so while
// NoAgentWait lasts; and a read that lost its subscriber or agent before
// any answer changed nothing, so while ReadRetry lasts. err is for the
// dial alone.
func (s *Server) dialHead(ctx context.Context, open *tetherv1.Open) (c *call, head *tetherv1.Frame, headErr, err error) {
	start := time.Now()
	for {
		c, err := s.dial(ctx, open)
		if err != nil || !(open.End || open.Upgrade != "") {
			return c, nil, nil, err
		}
		head, headErr := c.s.Head(ctx)
		if !s.again(open, headErr, start) || ctx.Err() != nil {
			return c, head, headErr, nil
		}
		s.forget(c)
		s.metrics.retries.Inc()
	}
}

// again reports whether a request that failed with err before its head,
// first sent at start, should go out once more.
func (s *Server) again(open *tetherv1.Open, err error, start time.Time) bool {
	switch tunnel.CodeOf(err) {
	case tetherv1.ResetCode_RESET_CODE_REFUSED:
		return time.Since(start) < s.cfg.NoAgentWait
	case tetherv1.ResetCode_RESET_CODE_UNAVAILABLE:
		return isRead(open) && time.Since(start) < s.cfg.ReadRetry
	}
	return false
}

// isRead: a request that changes nothing and ends by itself.
func isRead(open *tetherv1.Open) bool {
	switch open.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	if open.Upgrade != "" || !open.End {
		return false
	}
	q, _ := url.ParseQuery(open.Query)
	for _, k := range []string{"watch", "follow"} {
		if v := strings.ToLower(q.Get(k)); v == "true" || v == "1" {
			return false
		}
	}
	return !strings.Contains(open.Path, "/watch/")
}

// dial publishes the Open until a subscriber takes it. Nobody listening is
// the one failure that is always safe to retry: nothing reached an agent.
func (s *Server) dial(ctx context.Context, open *tetherv1.Open) (*call, error) {
	subj, err := subject.Requests(open.ClusterId)
	if err != nil {
		return nil, err
	}
	open.Window = uint32(s.cfg.Window)
	frame := &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: open}}
	hdr := nats.Header{}
	s.cfg.Propagator.Inject(ctx, propagation.HeaderCarrier(hdr))
	deadline := time.Now().Add(s.cfg.NoAgentWait)
	delay := 25 * time.Millisecond
	for {
		c := s.newCall()
		c.s.HeadSent(frame)
		if err := natslink.Publish(s.cfg.NATS, subj, c.inbox, frame, hdr); err != nil {
			s.forget(c)
			return nil, fmt.Errorf("sending the request for cluster %q: %w", open.ClusterId, err)
		}
		select {
		case <-ctx.Done():
			s.forget(c)
			return nil, ctx.Err()
		case <-c.answered:
		}
		c.mu.Lock()
		none := c.noResponders
		c.mu.Unlock()
		if !none {
			return c, nil
		}
		s.forget(c)
		if time.Now().Add(delay).After(deadline) {
			return nil, fmt.Errorf("no agent of cluster %q is connected", open.ClusterId)
		}
		s.metrics.retries.Inc()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 400*time.Millisecond)
	}
}

// pumpRequest streams the request body from the gateway to the agent,
// waiting for the agent's credit.
func (s *Server) pumpRequest(ctx context.Context, gw receiver, c *call) {
	for {
		f, err := gw.Receive()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.s.Reset(tetherv1.ResetCode_RESET_CODE_CANCELED, "client request broken off")
			}
			return
		}
		switch k := f.Kind.(type) {
		case *tetherv1.Frame_Data:
			if len(k.Data.Chunk) > 0 {
				if _, err := c.s.WriteContext(ctx, k.Data.Chunk); err != nil {
					return
				}
			}
			if k.Data.End {
				_ = c.s.CloseWrite()
				return
			}
		case *tetherv1.Frame_Reset_:
			c.s.Reset(k.Reset_.Code, k.Reset_.Message)
			return
		}
	}
}

func (s *Server) probeIdle(ctx context.Context) {
	cutoff := time.Now().Add(-s.cfg.IdleProbe).UnixNano()
	s.mu.Lock()
	var quiet []*call
	for _, c := range s.calls {
		if c.lastRecv.Load() >= cutoff {
			continue
		}
		if c.peerSubject() == "" {
			// A subscriber acknowledges a request it took within a second
			// (natslink.Ack); silence this long means it died with it.
			// The dial still waits for that first answer: end it too.
			c.lost("the subscriber that took the request is gone")
			continue
		}
		quiet = append(quiet, c)
	}
	s.mu.Unlock()
	subjs := make([]string, len(quiet))
	for i, c := range quiet {
		subjs[i] = c.peerSubject()
	}
	for i, err := range natslink.PingAll(ctx, s.cfg.NATS, subjs, 5*time.Second) {
		c := quiet[i]
		if errors.Is(err, natslink.ErrGone) {
			c.s.Close(&tunnel.ResetError{Code: tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, Message: "the subscriber holding the agent is gone"})
		} else if err == nil {
			c.lastRecv.Store(time.Now().UnixNano())
		}
	}
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
	headers := []*tetherv1.Header{{Name: "Content-Type", Values: []string{"application/json"}}}
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		headers = append(headers, &tetherv1.Header{Name: "Retry-After", Values: []string{strconv.Itoa(st.Details.RetryAfterSeconds)}})
	}
	return gw.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{
		Status: uint32(st.Code), Headers: headers, Body: st.Body(), End: true,
	}}})
}
