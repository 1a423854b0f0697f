// Package gateway is Tether's HTTPS edge. It serves Kubernetes API paths
// under /clusters/{id}/, or at the root of a cluster's own host name
// {id}.{domain}, authenticates the caller, drops every header a
// client could use to claim another identity, and hands the request to a
// router (a Call, or a Proxy stream when there is a body to stream).
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-dev/tether/lib/assertion"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/ratelog"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/services/gateway/internal/identity"
)

// Authenticator maps a bearer token to a user (identity.Chain, or one
// kind of token).
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (identity.User, error)
}

// Config configures a Gateway.
type Config struct {
	Auth Authenticator
	// Routers are tried in order: a gateway sends to the first it can
	// reach, so it keeps to its own router while that one lives and moves
	// on when it cannot be reached.
	Routers []tetherv1connect.ProxyServiceClient
	Limits  Limits
	// Hosts are the base domains under which {id}.{domain} names a
	// cluster, beside /clusters/{id}/; none: paths only.
	Hosts ClusterHosts
	// Identities signs who makes each request, for this request to this
	// cluster only: agents impersonate nothing else (ADR 011).
	Identities *assertion.Signer
	// Issuer names this gateway instance in what it signs.
	Issuer string

	telemetry.Instruments
}

// Gateway is the http.Handler of the edge.
type Gateway struct {
	cfg      Config
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	upgraded prometheus.Gauge
	upgrades *prometheus.CounterVec
	refusals *prometheus.CounterVec
	// authLog logs failed authentications, at a bounded rate: anyone can
	// send a bad token.
	authLog *ratelog.Logger
	// agentKeys: each cluster's agent's MAC key, as last announced.
	agentKeys agentKeys

	short, long admission
	// down[i]: until when router i is skipped, after it could not be
	// reached (Unix nanoseconds).
	down []atomic.Int64

	// Upgraded connections are the handler's own once hijacked: the HTTP
	// server's shutdown neither waits for nor closes them.
	hijackMu     sync.Mutex
	hijackClosed bool
	hijacked     sync.WaitGroup
	stopHijacked context.Context
	closeAll     context.CancelFunc
}

// New validates cfg and returns a Gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.Auth == nil || len(cfg.Routers) == 0 || cfg.Identities == nil {
		return nil, errors.New("gateway: auth, a router and an identity signing key are required")
	}
	if err := cfg.Instruments.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if err := cfg.Limits.validate(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{
		cfg: cfg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			// No cluster label: a label value taken from a request would let
			// any user mint series without bound. Per-cluster detail is in
			// the logs and traces (cluster_id) and in the agent's own metrics.
			Name: "tether_gateway_requests_total", Help: "Client requests, by verb and HTTP code.",
		}, []string{"method", "code"}),
		upgraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tether_gateway_upgraded_connections", Help: "Upgraded client connections (exec, attach, port-forward) being carried.",
		}),
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_gateway_upgrades_total", Help: "Connections switched to another protocol, by protocol (websocket, spdy, other).",
		}, []string{"protocol"}),
	}
	g.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_gateway_refusals_total", Help: "Requests the gateway refused itself, by reason.",
	}, []string{"reason"})
	var err error
	if g.authLog, err = ratelog.New(cfg.Logger, "authentication failures", authLogLines, time.Second, ratelog.Real{}); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	l := cfg.Limits
	g.short = admission{user: newCounter(l.InflightPerUser), cluster: newCounter(l.InflightPerCluster)}
	g.long = admission{user: newCounter(l.LongPerUser), cluster: newCounter(l.LongPerCluster)}
	g.stopHijacked, g.closeAll = context.WithCancel(context.Background())
	g.down = make([]atomic.Int64, len(cfg.Routers))
	if g.duration, err = telemetry.HopDuration(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	for _, c := range []prometheus.Collector{g.requests, g.upgraded, g.upgrades, g.refusals} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("gateway: registering metrics: %w", err)
		}
	}
	return g, nil
}

// authLogLines is how many failed authentications a second are logged;
// tether_gateway_refusals_total counts every one.
const authLogLines = 5

// ParsePath splits an escaped request path /clusters/{id}/rest into the
// cluster id and the Kubernetes path ("/" when rest is empty). It refuses
// anything that could name a different cluster or climb out of one.
func ParsePath(escaped string) (cluster, rest string, err error) {
	const prefix = "/clusters/"
	if !strings.HasPrefix(escaped, prefix) {
		return "", "", errNotFound
	}
	tail := escaped[len(prefix):]
	cluster, rest, _ = strings.Cut(tail, "/")
	rest = "/" + rest
	if !subject.ValidClusterID(cluster) {
		return "", "", errNotFound
	}
	if err := checkSegments(rest); err != nil {
		return "", "", err
	}
	return cluster, rest, nil
}

// checkSegments refuses an escaped Kubernetes path that could climb out of
// where it points.
func checkSegments(escaped string) error {
	for _, seg := range strings.Split(escaped, "/") {
		// Both plain and percent-encoded dot segments, in any case.
		switch strings.ToLower(seg) {
		case ".", "..", "%2e", "%2e%2e", ".%2e", "%2e.":
			return errDotSegment
		}
	}
	return nil
}

var (
	errNotFound   = errors.New("not found")
	errDotSegment = errors.New("path has a dot segment")
)

func extra(m map[string][]string) map[string]*tetherv1.Values {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]*tetherv1.Values, len(m))
	for k, v := range m {
		out[k] = &tetherv1.Values{Values: v}
	}
	return out
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
