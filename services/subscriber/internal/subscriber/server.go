// Package subscriber holds the agents' streams. For each connected agent it
// listens on NATS for requests to that agent's cluster and relays frames
// between the router that opened a request and the agent, without looking
// into bodies: flow control runs end to end between router and agent, so a
// subscriber buffers nothing of its own.
package subscriber

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
)

// Config configures a Server.
type Config struct {
	// ID names this subscriber instance in logs, Welcome and the registry.
	ID        string
	NATS      *nats.Conn
	Keepalive tunnel.Keepalive
	// IdleProbe is how long a request may be quiet before the subscriber
	// asks its router whether it still wants it.
	IdleProbe time.Duration

	telemetry.Instruments
}

// Server serves TunnelService.
type Server struct {
	tetherv1connect.UnimplementedTunnelServiceHandler

	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu       sync.Mutex
	sessions map[string]*session
	draining bool
	wg       sync.WaitGroup
}

type metrics struct {
	streams  prometheus.Gauge
	requests *prometheus.CounterVec
	inflight prometheus.Gauge
	frames   *prometheus.CounterVec
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if !subject.ValidToken(cfg.ID) {
		return nil, fmt.Errorf("subscriber: id %q must match [A-Za-z0-9_-]{1,64}", cfg.ID)
	}
	if cfg.NATS == nil {
		return nil, errors.New("subscriber: NATS is required")
	}
	if err := cfg.Instruments.Validate(); err != nil {
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	if cfg.Keepalive == (tunnel.Keepalive{}) {
		cfg.Keepalive = tunnel.DefaultKeepalive
	}
	if cfg.IdleProbe <= 0 {
		cfg.IdleProbe = 30 * time.Second
	}
	m := &metrics{
		streams:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_agent_streams", Help: "Agent streams open on this subscriber."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_subscriber_requests_total", Help: "Requests relayed to agents, by cluster and outcome."}, []string{"cluster", "outcome"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_subscriber_requests_in_flight", Help: "Requests being relayed."}),
		frames:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_subscriber_frames_total", Help: "Frames relayed, by direction."}, []string{"direction"}),
	}
	for _, c := range []prometheus.Collector{m.streams, m.requests, m.inflight, m.frames} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("subscriber: registering metrics: %w", err)
		}
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("subscriber", cfg.ID), metrics: m, sessions: map[string]*session{}}, nil
}

// Connect serves one agent's stream for as long as it lasts.
func (s *Server) Connect(ctx context.Context, stream *connect.BidiStream[tetherv1.Frame, tetherv1.Frame]) error {
	// A blocked Receive on a server stream ends only when the handler
	// returns, so the keepalive's abort makes this handler return.
	aborted := make(chan struct{})
	var once sync.Once
	abort := func() { once.Do(func() { close(aborted) }) }
	conn, err := tunnel.NewConn(stream, s.cfg.Keepalive, abort)
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, conn) }()
	select {
	case err = <-done:
	case <-aborted:
		select {
		case err = <-done: // serve ended on its own; Run aborts on its way out
		default:
			// serve is stuck in Receive; returning is what unblocks it.
			err = connect.NewError(connect.CodeUnavailable, errors.New("agent stream aborted"))
		}
	}
	// Nothing may write to the stream once the handler returns: NATS
	// callbacks and probes still hold conn.
	conn.Close()
	return err
}

func (s *Server) serve(ctx context.Context, conn *tunnel.Conn) error {
	// The agent must say who it is promptly.
	hs := time.AfterFunc(s.cfg.Keepalive.Timeout, conn.Abort)
	f, err := conn.Receive()
	hs.Stop()
	if err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("waiting for hello: %w", err))
	}
	hello := f.GetHello()
	if hello == nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("first frame is %T, not Hello", f.Kind))
	}
	if !subject.ValidClusterID(hello.ClusterId) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("invalid cluster id %q", hello.ClusterId))
	}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return connect.NewError(connect.CodeUnavailable, errors.New("subscriber is draining"))
	}
	sess := newSession(s, conn, hello)
	s.sessions[sess.id] = sess
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess.id)
		s.mu.Unlock()
		s.wg.Done()
	}()

	log := sess.log
	if err := sess.listen(); err != nil {
		log.Error("subscribing for the agent's requests", "err", err)
		sess.close("subscriber lost NATS")
		return connect.NewError(connect.CodeUnavailable, err)
	}
	if err := conn.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Welcome{Welcome: &tetherv1.Welcome{
		SessionId: sess.id, SubscriberId: s.cfg.ID, PingIntervalMs: uint32(s.cfg.Keepalive.Interval.Milliseconds()),
	}}}); err != nil {
		sess.close("agent stream broke")
		return err
	}
	log.Info("agent connected", "agent_version", hello.AgentVersion, "kubernetes_version", hello.KubernetesVersion)
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()

	probeCtx, stopProbe := context.WithCancel(ctx)
	go sess.probeIdle(probeCtx)
	err = conn.Run(ctx, sess.fromAgent)
	stopProbe()
	sess.close(fmt.Sprintf("agent of cluster %q disconnected", sess.cluster))
	log.Info("agent disconnected", "err", err)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Drain stops taking requests for every agent, waits for the requests in
// flight to finish until ctx ends, then closes the agents' streams.
func (s *Server) Drain(ctx context.Context) {
	s.mu.Lock()
	s.draining = true
	sessions := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.stopListening()
	}
	if err := waitFor(ctx, func() bool { return s.inflight() == 0 }); err != nil {
		s.log.Warn("drain deadline passed with requests in flight", "in_flight", s.inflight())
	}
	for _, sess := range sessions {
		sess.close("subscriber shutting down")
		sess.conn.Abort()
	}
	s.wg.Wait()
}

func (s *Server) inflight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sess := range s.sessions {
		n += sess.len()
	}
	return n
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
