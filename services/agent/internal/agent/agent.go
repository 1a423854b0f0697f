// Package agent is the part of Tether that runs inside a customer's cluster:
// it dials OUT to a subscriber, holds one Connect stream on which many
// requests are multiplexed, and serves each by calling its local
// kube-apiserver as the end user (impersonation), so the cluster's own RBAC
// decides.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-dev/tether/lib/backoff"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
)

// Config configures an Agent.
type Config struct {
	ClusterID string
	// SubscriberURLs are where subscribers listen: one behind a load
	// balancer, or several; a stream told to move (GoAway) connects to
	// the next.
	SubscriberURLs []string
	// Subscriber is the HTTP client for the subscriber (HTTP/2).
	Subscriber *http.Client
	// APIServer is the kube-apiserver's base URL; APITransport carries the
	// agent's own credentials to it.
	APIServer    string
	APITransport http.RoundTripper
	// UpgradeTransport carries the same credentials for upgrade requests
	// (exec, attach, port-forward): see UpgradeTransport. Without it the
	// agent answers upgrades with 501.
	UpgradeTransport http.RoundTripper
	// Credentials proves to subscribers which cluster this agent serves.
	Credentials *Credentials
	Window      int
	Keepalive   tunnel.Keepalive
	Version     string

	telemetry.Instruments
}

// Agent serves requests for one cluster.
type Agent struct {
	cfg     Config
	clients []tetherv1connect.TunnelServiceClient
	apiBase *url.URL
	log     *slog.Logger
	// streams counts welcomed streams: two for a moment while moving.
	streams  atomic.Int32
	draining atomic.Bool
	// conn is the open stream, for renewed credentials.
	conn    atomic.Pointer[tunnel.Conn]
	metrics *metrics
}

type metrics struct {
	requests  *prometheus.CounterVec
	inflight  prometheus.Gauge
	connected prometheus.Gauge
	connects  prometheus.Counter
	duration  *prometheus.HistogramVec
	upgraded  prometheus.Gauge
	renewals  prometheus.Counter
}

// New validates cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	if !subject.ValidClusterID(cfg.ClusterID) {
		return nil, fmt.Errorf("agent: invalid cluster id %q", cfg.ClusterID)
	}
	if len(cfg.SubscriberURLs) == 0 || cfg.Subscriber == nil || cfg.APITransport == nil || cfg.Credentials == nil {
		return nil, errors.New("agent: subscriber URL and client, API transport and credentials are required")
	}
	if err := cfg.Instruments.Validate(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	base, err := url.Parse(cfg.APIServer)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("agent: kube-apiserver URL %q is not absolute", cfg.APIServer)
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	cfg.Window = tunnel.ClampWindow(cfg.Window)
	if cfg.Keepalive == (tunnel.Keepalive{}) {
		cfg.Keepalive = tunnel.DefaultKeepalive
	}
	m := &metrics{
		requests:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_agent_requests_total", Help: "Requests served, by HTTP code."}, []string{"code"}),
		inflight:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_agent_requests_in_flight", Help: "Requests being served."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_agent_stream_connected", Help: "Streams the agent holds to subscribers: 1, and 2 for a moment while moving."}),
		connects:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_agent_connects_total", Help: "Streams established to a subscriber."}),
		upgraded:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_agent_upgraded_connections", Help: "Upgraded connections (exec, attach, port-forward) being carried."}),
		renewals:  prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_agent_credential_renewals_total", Help: "Credentials renewed (each sent on the open stream)."}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tether_request_duration_seconds", Help: "Time to the response head at this hop.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"hop"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.inflight, m.connected, m.connects, m.duration, m.upgraded, m.renewals} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("agent: registering metrics: %w", err)
		}
	}
	clients := make([]tetherv1connect.TunnelServiceClient, len(cfg.SubscriberURLs))
	for i, u := range cfg.SubscriberURLs {
		clients[i] = tetherv1connect.NewTunnelServiceClient(cfg.Subscriber, u, tunnel.ClientOptions())
	}
	return &Agent{
		cfg:     cfg,
		clients: clients,
		apiBase: base,
		log:     cfg.Logger.With("cluster_id", cfg.ClusterID),
		metrics: m,
	}, nil
}

// Connected reports whether the agent holds a stream now (readiness).
func (a *Agent) Connected() bool { return a.streams.Load() > 0 }

// Run holds a stream to the subscriber, reconnecting with jittered backoff,
// until ctx ends. Then it refuses new requests, lets those in flight finish
// for up to drain, and closes the stream.
func (a *Agent) Run(ctx context.Context, drain time.Duration) error {
	go a.cfg.Credentials.Renew(ctx, func(token string) {
		a.metrics.renewals.Inc()
		if c := a.conn.Load(); c != nil {
			// A stream that misses it is closed at the old expiry and the
			// next one connects with the new credential.
			if err := c.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Credential{Credential: &tetherv1.Credential{Token: token}}}); err != nil {
				a.log.Warn("sending the renewed credential", "err", err)
			}
		}
	})
	b := backoff.Default()
	// Streams being left while moving run on until their subscriber
	// closes them; Run returns after them.
	var leaving sync.WaitGroup
	defer leaving.Wait()
	var leave func() // tells the stream being left that its successor is up
	for next := 0; ; next++ {
		// The session outlives ctx by the drain period.
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, func() {
			a.draining.Store(true)
			time.AfterFunc(drain, cancel)
		})
		start := time.Now()
		link := &sessionLink{moved: make(chan struct{}), previous: leave}
		done := make(chan error, 1)
		go func() { done <- a.session(sctx, ctx, a.clients[next%len(a.clients)], link) }()
		var err error
		select {
		case err = <-done:
		case <-link.moved:
			// The subscriber asked this stream to move: connect another
			// now; this one serves on until its subscriber closes it, and
			// hears when the next is up. No moment without a stream.
			leaving.Add(1)
			go func() {
				defer leaving.Done()
				<-done
				stop()
				cancel()
			}()
			leave = link.leave
			b.Reset()
			continue
		}
		stop()
		cancel()
		if link.previous != nil && !link.welcomed.Load() {
			leave = link.previous // still to be told, by the next one that connects
		} else {
			leave = nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 30*time.Second {
			b.Reset()
		}
		d := b.Next()
		a.log.Warn("stream to subscriber ended; reconnecting", "err", err, "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// sessionLink is what Run and one session tell each other: the subscriber
// asked it to move (moved), it was welcomed, how to tell it its successor
// is up (leave), and the predecessor to tell once it is welcomed.
type sessionLink struct {
	moved     chan struct{}
	movedOnce sync.Once
	welcomed  atomic.Bool
	conn      atomic.Pointer[tunnel.Conn]
	previous  func()
}

// leave sends GoAway back on the stream: the agent has another now.
func (l *sessionLink) leave() {
	if c := l.conn.Load(); c != nil {
		_ = c.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_GoAway{GoAway: &tetherv1.GoAway{Reason: "connected elsewhere"}}})
	}
}

// session runs one stream. It ends when the stream breaks, or once ctx
// (the agent's life) has ended and no request is left.
func (a *Agent) session(sctx, life context.Context, client tetherv1connect.TunnelServiceClient, link *sessionLink) error {
	// Cancelling sctx is what breaks a blocked Receive: the stream must be
	// opened with the context that cancel ends.
	sctx, cancel := context.WithCancel(sctx)
	defer cancel()
	token, err := a.cfg.Credentials.Token(sctx)
	if err != nil {
		return err
	}
	stream := client.Connect(sctx)
	stream.RequestHeader().Set("Authorization", "Bearer "+token)
	conn, err := tunnel.NewConn(stream, a.cfg.Keepalive, cancel)
	if err != nil {
		return err
	}
	defer func() { _ = stream.CloseRequest(); _ = stream.CloseResponse() }()
	if err := conn.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Hello{Hello: &tetherv1.Hello{
		ClusterId: a.cfg.ClusterID, AgentVersion: a.cfg.Version, KubernetesVersion: a.kubeVersion(sctx),
	}}}); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	hs := time.AfterFunc(a.cfg.Keepalive.Timeout, cancel)
	f, err := conn.Receive()
	hs.Stop()
	if err != nil {
		if connect.CodeOf(err) == connect.CodeUnauthenticated {
			// Revoked or expired: enroll again rather than insist.
			a.cfg.Credentials.Refused()
		}
		return fmt.Errorf("waiting for welcome: %w", err)
	}
	w := f.GetWelcome()
	if w == nil {
		return fmt.Errorf("subscriber answered hello with %T", f.Kind)
	}
	log := a.log.With("session_id", w.SessionId, "subscriber", w.SubscriberId)
	log.Info("connected to subscriber")
	a.metrics.connects.Inc()
	a.metrics.connected.Set(float64(a.streams.Add(1)))
	a.conn.Store(conn)
	link.conn.Store(conn)
	link.welcomed.Store(true)
	defer func() {
		a.conn.CompareAndSwap(conn, nil)
		a.metrics.connected.Set(float64(a.streams.Add(-1)))
	}()
	if link.previous != nil {
		// This stream is up: the one being left may stop taking requests.
		link.previous()
	}

	mux := tunnel.NewMux(conn, a.cfg.Window, func(ctx context.Context, s *tunnel.Stream) {
		a.serve(ctx, log, s)
	})
	mux.OnControl = func(f *tetherv1.Frame) {
		if g := f.GetGoAway(); g != nil {
			link.movedOnce.Do(func() {
				log.Info("subscriber asks this stream to move; connecting another", "reason", g.GetReason())
				close(link.moved)
			})
		}
	}
	// Once the agent is told to stop, close the stream as soon as it is idle.
	go func() {
		select {
		case <-sctx.Done():
			return
		case <-life.Done():
		}
		log.Info("draining: refusing new requests, waiting for those in flight", "in_flight", mux.Len())
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for mux.Len() > 0 {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
		cancel()
	}()
	err = mux.Run(sctx)
	log.Info("stream closed", "err", err)
	return err
}

// kubeVersion asks the kube-apiserver its version, for the registry.
func (a *Agent) kubeVersion(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.apiBase.String()+"/version", nil)
	if err != nil {
		return ""
	}
	resp, err := a.cfg.APITransport.RoundTrip(req)
	if err != nil {
		a.log.Warn("kube-apiserver unreachable", "err", err)
		return ""
	}
	defer resp.Body.Close()
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := decodeJSON(resp.Body, &v); err != nil {
		return ""
	}
	return v.GitVersion
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
