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
	// FrontProxy, when set, names users to the kube-apiserver in its
	// front-proxy authentication's headers instead of impersonating them:
	// APITransport and UpgradeTransport then present the front proxy's
	// client certificate, and SelfTransport carries the agent's own
	// credentials for its own calls. Nil: impersonation.
	FrontProxy    *FrontProxy
	SelfTransport http.RoundTripper
	// UpgradeTransport carries the same credentials for upgrade requests
	// (exec, attach, port-forward): see UpgradeTransport. Without it the
	// agent answers upgrades with 501.
	UpgradeTransport http.RoundTripper
	// Credentials proves to subscribers which cluster this agent serves.
	Credentials *Credentials
	// Streams is how many streams the agent holds, each to another
	// subscriber where it can: requests spread across them, and one
	// subscriber lost leaves the others serving (default 2).
	Streams   int
	Window    int
	Keepalive tunnel.Keepalive
	Version   string
	// Rebalance is how often a stream that had to go beside another of the
	// agent's streams tries to move to a subscriber of its own (default
	// 15 s, jittered), doubling after each round that found none, up to
	// 16 times.
	Rebalance time.Duration
	// MutationTimeout bounds a mutation that runs on after its stream was
	// lost, for a retry to find its result; RememberFor is how long that
	// result is kept (default 5 min each), in at most RememberBytes.
	MutationTimeout time.Duration
	RememberFor     time.Duration
	RememberBytes   int
	// Admission verifies whom each request runs as; AccessReviews asks the
	// cluster whether a user may act as whom they asked (kubectl --as).
	Admission     Admission
	AccessReviews AccessReviews

	telemetry.Instruments
}

// Agent serves requests for one cluster.
type Agent struct {
	cfg Config
	// holdBack is how long the start of a body of unknown length waits
	// for more before its head goes (proxy.go).
	holdBack time.Duration
	clients  []tetherv1connect.TunnelServiceClient
	apiBase  *url.URL
	log      *slog.Logger
	// streams counts welcomed streams: one more for a moment while one
	// moves.
	streams  atomic.Int32
	draining atomic.Bool
	metrics  *metrics
	memory   *memory
	sessions sessions
	admit    *admission

	mu sync.Mutex
	// conns are the welcomed streams, for renewed credentials; bySub
	// counts them by subscriber, to keep them on different ones.
	conns map[*tunnel.Conn]bool
	bySub map[string]int
}

type metrics struct {
	requests  *prometheus.CounterVec
	inflight  prometheus.Gauge
	connected prometheus.Gauge
	connects  prometheus.Counter
	duration  *prometheus.HistogramVec
	upgraded  prometheus.Gauge
	renewals  prometheus.Counter
	mutations *prometheus.CounterVec
	// refused counts requests refused before the kube-apiserver saw them,
	// by reason; privileged counts those run as an allowed system: name.
	refused    *prometheus.CounterVec
	privileged prometheus.Counter
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
	if cfg.FrontProxy != nil {
		if err := cfg.FrontProxy.validate(); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	if cfg.SelfTransport == nil {
		cfg.SelfTransport = cfg.APITransport
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
	if cfg.Streams <= 0 {
		cfg.Streams = 2
	}
	if cfg.Rebalance <= 0 {
		cfg.Rebalance = 15 * time.Second
	}
	if cfg.MutationTimeout <= 0 {
		cfg.MutationTimeout = 5 * time.Minute
	}
	if cfg.RememberFor <= 0 {
		cfg.RememberFor = 5 * time.Minute
	}
	if cfg.RememberBytes <= 0 {
		cfg.RememberBytes = 64 << 20
	}
	admit, err := newAdmission(cfg.Admission, cfg.ClusterID)
	if err != nil {
		return nil, err
	}
	m := &metrics{
		requests:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_agent_requests_total", Help: "Requests served, by HTTP code."}, []string{"code"}),
		inflight:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_agent_requests_in_flight", Help: "Requests being served."}),
		connected:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_agent_stream_connected", Help: "Streams the agent holds to subscribers (--streams, and one more for a moment while one moves)."}),
		connects:   prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_agent_connects_total", Help: "Streams established to a subscriber."}),
		upgraded:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_agent_upgraded_connections", Help: "Upgraded connections (exec, attach, port-forward) being carried."}),
		renewals:   prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_agent_credential_renewals_total", Help: "Credentials renewed (each sent on the open streams)."}),
		mutations:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_agent_mutations_total", Help: "Mutations by what became of them: ran, replayed (a retry answered with the first result), outcome_unknown (a retry whose earlier attempt went to another agent process, refused)."}, []string{"result"}),
		refused:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_agent_requests_refused_total", Help: "Requests refused before the kube-apiserver saw them, by reason: identity (not signed for this request by a gateway key the identity root certified, or expired), tenant (a user of another tenant), replayed (a try of a request that came before), system_name (a system: user or group the cluster does not allow), impersonation (kubectl --as the cluster does not allow the user), capacity (too many requests under way to check for replays)."}, []string{"reason"}),
		privileged: prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_agent_privileged_requests_total", Help: "Requests run as a system: user or group the cluster allows by name (break-glass)."}),
	}
	verifier := cfg.Admission.Verifier
	checks := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tether_agent_identity_checks_total", ConstLabels: prometheus.Labels{"by": "mac"},
			Help: "Signed identities accepted, by how: mac (the gateway knew this agent's key), signature (a cluster's first request through a gateway, or after a restart)."},
			func() float64 { n, _ := verifier.Checks(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tether_agent_identity_checks_total", ConstLabels: prometheus.Labels{"by": "signature"},
			Help: "Signed identities accepted, by how: mac (the gateway knew this agent's key), signature (a cluster's first request through a gateway, or after a restart)."},
			func() float64 { _, n := verifier.Checks(); return float64(n) }),
	}
	if m.duration, err = telemetry.HopDuration(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	for _, c := range append([]prometheus.Collector{m.requests, m.inflight, m.connected, m.connects, m.upgraded, m.renewals, m.mutations, m.refused, m.privileged}, checks...) {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("agent: registering metrics: %w", err)
		}
	}
	clients := make([]tetherv1connect.TunnelServiceClient, len(cfg.SubscriberURLs))
	for i, u := range cfg.SubscriberURLs {
		clients[i] = tetherv1connect.NewTunnelServiceClient(cfg.Subscriber, u, tunnel.ClientOptions())
	}
	return &Agent{
		cfg:      cfg,
		holdBack: holdBack,
		clients:  clients,
		apiBase:  base,
		log:      cfg.Logger.With("cluster_id", cfg.ClusterID),
		metrics:  m,
		memory:   newMemory(cfg.RememberFor, cfg.RememberBytes),
		admit:    admit,
		conns:    map[*tunnel.Conn]bool{},
		bySub:    map[string]int{},
	}, nil
}

// Connected reports whether the agent holds a stream now (readiness).
func (a *Agent) Connected() bool { return a.streams.Load() > 0 }

// Streams is how many welcomed streams the agent holds now.
func (a *Agent) Streams() int { return int(a.streams.Load()) }

// Run holds Config.Streams streams to subscribers, each reconnecting with
// jittered backoff, until ctx ends. Then it refuses new requests, lets
// those in flight finish for up to drain, and closes the streams;
// mutations still running at the kube-apiserver finish within drain too.
func (a *Agent) Run(ctx context.Context, drain time.Duration) error {
	go a.cfg.Credentials.Renew(ctx, func(token string) {
		a.metrics.renewals.Inc()
		a.mu.Lock()
		conns := make([]*tunnel.Conn, 0, len(a.conns))
		for c := range a.conns {
			conns = append(conns, c)
		}
		a.mu.Unlock()
		for _, c := range conns {
			// A stream that misses it is closed at the old expiry and the
			// next one connects with the new credential.
			if err := c.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Credential{Credential: &tetherv1.Credential{Token: token}}}); err != nil {
				a.log.Warn("sending the renewed credential", "err", err)
			}
		}
	})
	var wg sync.WaitGroup
	for i := range a.cfg.Streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.slot(ctx, drain, i)
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { a.memory.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		a.log.Warn("exiting with mutations still running at the kube-apiserver")
	}
	return nil
}

// slot holds one of the agent's streams. Slot i starts at subscriber URL
// i and moves on to the next when its stream ends, when it is told to move
// (a subscriber's planned restart: GoAway), or when it lands beside
// another of the agent's streams. A stream that is moving serves on until
// its successor is welcomed, so there is no moment without it; a stream
// that had to go beside another tries now and then to move to a subscriber
// of its own.
func (a *Agent) slot(ctx context.Context, drain time.Duration, i int) {
	b := backoff.Default()
	// Streams being left run on until their subscribers close them; the
	// slot returns after them.
	var leaving sync.WaitGroup
	defer leaving.Wait()
	let := func(h *held) {
		leaving.Add(1)
		go func() {
			defer leaving.Done()
			<-h.done
			h.release()
		}()
	}
	n := len(a.clients)
	next := i
	// connect opens streams from next on until one is welcomed, or old (if
	// any) ends, or ctx does; doubles is whether one beside another of the
	// agent's streams may do, once every subscriber was tried. It returns
	// nil when it gave up.
	connect := func(old *held, doubles bool, rounds int) *held {
		tries := 0
		for ctx.Err() == nil {
			if rounds > 0 && tries >= rounds*n {
				return nil
			}
			h := a.open(ctx, drain, a.clients[next%n], doubles && tries >= n)
			next++
			tries++
			var oldDone <-chan error
			if old != nil {
				oldDone = old.done
			}
			select {
			case <-h.link.up:
				b.Reset()
				return h
			case <-h.link.refused:
				// Beside another of ours: it leaves by itself; try the next
				// at once.
				let(h)
				continue
			case err := <-h.done:
				h.release()
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, errDouble) {
					continue // refused before its Welcome: the next at once
				}
				d := b.Next()
				if hint, ok := tunnel.RetryAfter(err); ok {
					// A subscriber taking a storm of reconnects at its pace:
					// come back within the time it asked, spread out.
					d = max(d, backoff.Spread(hint/2, 2))
				}
				a.log.Warn("no stream to subscriber; trying the next", "slot", i, "err", err, "in", d.Round(time.Millisecond))
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			case err := <-oldDone:
				// The stream being replaced ended first: wait for this one.
				a.log.Info("stream ended while its successor connects", "slot", i, "err", err)
				old.release()
				old, oldDone = nil, nil
				if ok, _ := h.welcome(); ok {
					return h
				}
			}
		}
		return nil
	}
	var cur *held
	// misses counts rounds in a row that found no subscriber of its own:
	// each doubles the wait for the next, up to 16 times Rebalance, so a
	// fleet whose other subscriber is down does not knock on it every 15 s
	// for as long as it stays down.
	misses := 0
	for ctx.Err() == nil {
		if cur == nil {
			if cur = connect(nil, true, 0); cur == nil {
				return
			}
			misses = 0
		}
		var rebalance <-chan time.Time
		if cur.link.double {
			rebalance = time.After(jitter(a.cfg.Rebalance << min(misses, maxRebalanceDoublings)))
		}
		select {
		case err := <-cur.done:
			cur.release()
			lived := time.Since(cur.start)
			cur = nil
			if ctx.Err() != nil {
				return
			}
			if lived > 30*time.Second {
				b.Reset()
			}
			a.log.Warn("stream to subscriber ended; reconnecting", "slot", i, "err", err)
		case <-cur.link.moved:
			// Its subscriber is going away: connect the next first; this
			// one serves until that one is up, then hears so (GoAway back),
			// finishes its requests and is closed by its subscriber.
			old := cur
			cur = connect(old, true, 0)
			if old.ended.Load() {
				continue
			}
			old.link.leave()
			let(old)
		case <-rebalance:
			// Beside another of ours: one round over the others, none of
			// them beside.
			if h := connect(cur, false, 1); h != nil {
				a.log.Info("moved a stream to a subscriber of its own", "slot", i)
				if !cur.ended.Load() {
					cur.link.leave()
					let(cur)
				}
				cur, misses = h, 0
			} else if cur.ended.Load() {
				cur = nil
			} else {
				misses++
			}
		case <-ctx.Done():
		}
	}
	if cur != nil {
		// Draining: the session closes once it is idle (or at the drain
		// deadline).
		<-cur.done
		cur.release()
	}
}

// maxRebalanceDoublings caps the rebalance backoff at 16 times Rebalance.
const maxRebalanceDoublings = 4

// jitter is d plus up to half of it again, so a fleet does not move in step.
func jitter(d time.Duration) time.Duration { return backoff.Spread(d, 0.5) }

// held is one stream of a slot's: the session running it and how to stop
// it.
type held struct {
	link   *sessionLink
	done   chan error
	start  time.Time
	cancel context.CancelFunc
	stop   func() bool
	// ended: done has been received (by connect, for a stream it
	// replaced).
	ended atomic.Bool
}

// open starts a stream to client. Its session outlives ctx by the drain
// period, to finish the requests it has.
func (a *Agent) open(ctx context.Context, drain time.Duration, client tetherv1connect.TunnelServiceClient, allowDouble bool) *held {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		a.draining.Store(true)
		time.AfterFunc(drain, cancel)
	})
	h := &held{
		link:  &sessionLink{moved: make(chan struct{}), up: make(chan struct{}), refused: make(chan struct{}), allowDouble: allowDouble},
		done:  make(chan error, 1),
		start: time.Now(), cancel: cancel, stop: stop,
	}
	go func() { h.done <- a.session(sctx, ctx, client, h.link) }()
	return h
}

// welcome waits until h is welcomed, or ends.
func (h *held) welcome() (bool, error) {
	select {
	case <-h.link.up:
		return true, nil
	case <-h.link.refused:
		return false, errDouble
	case err := <-h.done:
		h.release()
		return false, err
	}
}

func (h *held) release() {
	h.ended.Store(true)
	h.stop()
	h.cancel()
}

// errDouble: the stream landed on a subscriber another of the agent's
// streams holds; the slot tries the next.
var errDouble = errors.New("agent: subscriber already holds another of this agent's streams")

// sessionLink is what a slot and one session tell each other: the
// session is welcomed (up), or landed beside another of the agent's
// streams and leaves (refused); its subscriber asks it to move (moved);
// and how to tell it its successor is up (leave).
type sessionLink struct {
	moved     chan struct{}
	movedOnce sync.Once
	up        chan struct{}
	refused   chan struct{}
	conn      atomic.Pointer[tunnel.Conn]
	// allowDouble: stay even beside another of the agent's streams;
	// double: it did.
	allowDouble bool
	double      bool
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
	ended := a.sessions.unreported()
	var held []string
	if !link.allowDouble {
		held = a.heldSubscribers()
	}
	if err := conn.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Hello{Hello: &tetherv1.Hello{
		ClusterId: a.cfg.ClusterID, AgentVersion: a.cfg.Version, KubernetesVersion: a.kubeVersion(sctx),
		EndedSessions: ended, HeldSubscribers: held,
	}}}); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	hs := time.AfterFunc(a.cfg.Keepalive.Timeout, cancel)
	f, err := conn.Receive()
	hs.Stop()
	if err != nil {
		switch connect.CodeOf(err) {
		case connect.CodeUnauthenticated:
			// Revoked or expired: enroll again rather than insist.
			a.cfg.Credentials.Refused()
		case connect.CodeAlreadyExists:
			// It holds another of our streams (Hello.held_subscribers).
			close(link.refused)
			return errDouble
		}
		return fmt.Errorf("waiting for welcome: %w", err)
	}
	w := f.GetWelcome()
	if w == nil {
		return fmt.Errorf("subscriber answered hello with %T", f.Kind)
	}
	log := a.log.With("session_id", w.SessionId, "subscriber", w.SubscriberId)
	// Its id is this process's from now on, whatever happens next: a
	// retried mutation naming it was meant for this process.
	a.sessions.add(w.SessionId)
	a.sessions.reported(ended)
	defer a.sessions.end(w.SessionId)
	link.conn.Store(conn)
	// Every stream a subscriber holds counts, the one being left too,
	// until it closes.
	a.metrics.connects.Inc()
	a.metrics.connected.Set(float64(a.streams.Add(1)))
	defer func() { a.metrics.connected.Set(float64(a.streams.Add(-1))) }()
	kept, double := a.hold(conn, w.SubscriberId, link.allowDouble)
	if kept {
		log.Info("connected to subscriber", "beside_another", double)
		link.double = double
		defer a.release(conn, w.SubscriberId)
		close(link.up)
	} else {
		// The subscriber may have given it requests already: it serves
		// those and leaves (GoAway back), and the slot tries the next.
		log.Info("subscriber already holds another stream of this agent; leaving it for the next")
		link.leave()
		close(link.refused)
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

// hold records a welcomed stream on subscriber sub; it refuses one beside
// another of the agent's streams unless allowDouble.
func (a *Agent) hold(conn *tunnel.Conn, sub string, allowDouble bool) (kept, double bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	double = a.bySub[sub] > 0
	if double && !allowDouble && len(a.clients) > 1 {
		return false, true
	}
	a.bySub[sub]++
	a.conns[conn] = true
	return true, double
}

// heldSubscribers are the subscribers holding a kept stream of the agent's.
func (a *Agent) heldSubscribers() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.bySub))
	for sub := range a.bySub {
		out = append(out, sub)
	}
	return out
}

func (a *Agent) release(conn *tunnel.Conn, sub string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.conns, conn)
	if a.bySub[sub]--; a.bySub[sub] <= 0 {
		delete(a.bySub, sub)
	}
}

// kubeVersion asks the kube-apiserver its version, for the registry.
func (a *Agent) kubeVersion(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.apiBase.String()+"/version", nil)
	if err != nil {
		return ""
	}
	resp, err := a.cfg.SelfTransport.RoundTrip(req)
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
