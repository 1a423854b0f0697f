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
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-dev/tether/lib/agentcred"
	"github.com/tether-dev/tether/lib/clusters"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/ratelog"
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
	// Credentials checks the credential an agent presents; Clusters says
	// whether its cluster still exists as the same cluster (same uid).
	Credentials *agentcred.Verifier
	Clusters    Clusters
	// Events gets each stream's connect and disconnect, and the lease
	// that vouches for them all.
	Events Events
	// MoveTimeout is how long a draining subscriber waits for its agents
	// to connect elsewhere before it stops taking their requests anyway.
	MoveTimeout time.Duration
	// NATSGrace is how long the subscriber may be without NATS before it
	// asks its agents to move: a stream here serves nobody meanwhile.
	NATSGrace time.Duration
	// AdmitRate bounds the new agent streams taken a second, AdmitBurst
	// at once; beyond them an agent is told when to come back. Zero: no
	// bound.
	AdmitRate  float64
	AdmitBurst int
	Now        func() time.Time

	telemetry.Instruments
}

// Clusters is what the subscriber needs of the cluster projection.
type Clusters interface {
	Get(id string) (clusters.Cluster, bool)
	// Sync reads the stream up to its end: a cluster created a moment
	// ago may not be projected here yet when its agent first connects.
	Sync(ctx context.Context) error
}

// syncTimeout bounds how long an agent's connect waits for the projection
// to catch up before it is told to come back.
const syncTimeout = 5 * time.Second

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
	// orphans are requests dropped while NATS was away; their routers
	// are told once it is back. moveAway asks the agents to move if it
	// stays away.
	orphans  []*relay
	moveAway *time.Timer
	// listeners take each cluster's requests for its streams here.
	listeners *listeners
	// refusals logs refused agent credentials, at a bounded rate.
	refusals  *ratelog.Logger
	admission *admission
	// incarnation stamps this process's agent events; a new one is
	// taken to announce every stream again (ADR 014).
	incarnation atomic.Pointer[string]
	// process names this process in its sessions' ids, and answers the
	// routers' probes for all of them at once (ADR 016).
	process string
	probes  *nats.Subscription
}

// refusalLines is how many refused credentials a second are logged.
const refusalLines = 5

type metrics struct {
	streams  prometheus.Gauge
	refused  *prometheus.CounterVec
	requests *prometheus.CounterVec
	inflight prometheus.Gauge
	frames   *prometheus.CounterVec
	// toAgent and toRouter are frames' two directions, looked up once:
	// they are counted for every frame.
	toAgent, toRouter prometheus.Counter
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if !subject.ValidToken(cfg.ID) {
		return nil, fmt.Errorf("subscriber: id %q must match [A-Za-z0-9_-]{1,64}", cfg.ID)
	}
	if cfg.NATS == nil || cfg.Credentials == nil || cfg.Clusters == nil || cfg.Events == nil {
		return nil, errors.New("subscriber: NATS, a credential verifier, the clusters and an event sink are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MoveTimeout <= 0 {
		cfg.MoveTimeout = 10 * time.Second
	}
	if cfg.NATSGrace <= 0 {
		cfg.NATSGrace = 3 * time.Second
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
		refused:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_subscriber_agents_refused_total", Help: "Agent streams refused or closed for their credential, by reason."}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_subscriber_requests_total", Help: "Requests relayed to agents, by outcome (per cluster: the logs and traces, cluster_id)."}, []string{"outcome"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "tether_subscriber_requests_in_flight", Help: "Requests being relayed."}),
		frames:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tether_subscriber_frames_total", Help: "Frames relayed, by direction."}, []string{"direction"}),
	}
	m.toAgent, m.toRouter = m.frames.WithLabelValues("to_agent"), m.frames.WithLabelValues("to_router")
	for _, c := range []prometheus.Collector{m.streams, m.refused, m.requests, m.inflight, m.frames} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("subscriber: registering metrics: %w", err)
		}
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("subscriber", cfg.ID), metrics: m, sessions: map[string]*session{}, listeners: newListeners(cfg.NATS),
		admission: newAdmission(cfg.AdmitRate, cfg.AdmitBurst)}
	first := newID()
	s.incarnation.Store(&first)
	s.process = subject.NewProcess()
	// One answer for every session here: a router asks once a period
	// whether this process is there, not once per session (ADR 016).
	probes, err := cfg.NATS.Subscribe(subject.Session(s.process, natslink.SessionProbe), func(m *nats.Msg) {
		if f, err := tunnel.Decode(m.Data); err == nil && f.GetPing() != nil {
			natslink.AnswerPing(cfg.NATS, m, true)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscriber: answering probes: %w", err)
	}
	s.probes = probes
	// Anyone who reaches the public endpoint can present a bad credential:
	// a few lines a second say so, the counter counts them all.
	if s.refusals, err = ratelog.New(s.log, "agent credential refusals", refusalLines, time.Second, ratelog.Real{}); err != nil {
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	natsconn.OnDisconnect(cfg.NATS, s.natsLost)
	natsconn.OnReconnect(cfg.NATS, s.natsBack)
	return s, nil
}

// natsLost: frames to and from routers may be lost with the link, so every
// request in flight is reset at its agent now (a mutation still finishes
// there, and its result is kept for the router's next attempt), and its
// router hears once the link is back. If the link stays away past
// NATSGrace, the agents are asked to move to a subscriber that has one.
func (s *Server) natsLost() {
	s.mu.Lock()
	sessions := s.sessionList()
	s.mu.Unlock()
	var dropped []*relay
	for _, sess := range sessions {
		dropped = append(dropped, sess.dropRelays("subscriber lost its NATS connection")...)
	}
	s.mu.Lock()
	s.orphans = append(s.orphans, dropped...)
	if s.moveAway == nil {
		s.moveAway = time.AfterFunc(s.cfg.NATSGrace, s.natsAway)
	}
	s.mu.Unlock()
	s.log.Warn("NATS connection lost; requests in flight reset", "requests", len(dropped), "streams", len(sessions))
}

// natsAway asks every agent to move while NATS is still away.
func (s *Server) natsAway() {
	if s.cfg.NATS.IsConnected() {
		return
	}
	s.mu.Lock()
	sessions := s.sessionList()
	s.mu.Unlock()
	s.log.Warn("still without NATS; asking the agents to move", "streams", len(sessions), "after", s.cfg.NATSGrace)
	for _, sess := range sessions {
		if err := sess.conn.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_GoAway{GoAway: &tetherv1.GoAway{Reason: "subscriber lost NATS"}}}); err != nil {
			sess.log.Warn("telling the agent to move", "err", err)
		}
	}
}

// natsBack tells the routers of the requests dropped while NATS was away.
func (s *Server) natsBack() {
	s.mu.Lock()
	orphans := s.orphans
	s.orphans = nil
	if s.moveAway != nil {
		s.moveAway.Stop()
		s.moveAway = nil
	}
	s.mu.Unlock()
	for _, r := range orphans {
		r.tellRouter("subscriber lost its NATS connection")
	}
	s.log.Info("NATS connection back", "routers_told", len(orphans))
}

// sessionList is every open session; s.mu is held.
func (s *Server) sessionList() []*session {
	out := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		out = append(out, sess)
	}
	return out
}

// Handler serves TunnelService at the path it returns. Each stream's
// request body is handed to Connect, which closes it to break its own
// blocked Receive: a dead agent's stream ends without a goroutine per
// stream standing by to return the handler.
func (s *Server) Handler() (string, http.Handler) {
	path, h := tetherv1connect.NewTunnelServiceHandler(s, tunnel.HandlerOptions())
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyKey{}, r.Body)))
	})
}

type bodyKey struct{}

// Connect serves one agent's stream for as long as it lasts.
func (s *Server) Connect(ctx context.Context, stream *connect.BidiStream[tetherv1.Frame, tetherv1.Frame]) error {
	body, ok := ctx.Value(bodyKey{}).(io.Closer)
	if !ok {
		return connect.NewError(connect.CodeInternal, errors.New("subscriber: TunnelService must be served by Server.Handler"))
	}
	if wait, ok := s.admission.admit(s.cfg.Now()); !ok {
		s.metrics.refused.WithLabelValues("admission").Inc()
		return tunnel.RetryLater(connect.CodeResourceExhausted, errors.New("subscriber takes no more new agent streams this second"), wait)
	}
	// Nothing is read from an agent that has not shown a credential.
	claims, err := s.authenticate(ctx, stream.RequestHeader().Get("Authorization"))
	if err != nil {
		return err
	}
	// Closing the request body makes a blocked Receive return (HTTP/2
	// breaks the body's pipe), and the handler with it.
	conn, err := tunnel.NewConn(stream, s.cfg.Keepalive, func() { _ = body.Close() })
	if err != nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	err = s.serve(ctx, conn, claims)
	// Nothing may write to the stream once the handler returns: NATS
	// callbacks and probes still hold conn.
	conn.Close()
	return err
}

// authenticate checks an agent's bearer credential: signed by
// agent-registry, unexpired, and for a cluster that still exists as the one
// it was issued for.
func (s *Server) authenticate(ctx context.Context, header string) (agentcred.Claims, error) {
	token, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		s.metrics.refused.WithLabelValues("no_credential").Inc()
		return agentcred.Claims{}, connect.NewError(connect.CodeUnauthenticated, errors.New("a credential is required: enroll with a bootstrap token"))
	}
	c, err := s.cfg.Credentials.Verify(token, s.cfg.Now())
	if err != nil {
		s.metrics.refused.WithLabelValues("invalid_credential").Inc()
		s.refusals.Warn("agent credential refused", "err", err)
		return agentcred.Claims{}, connect.NewError(connect.CodeUnauthenticated, errors.New("credential refused"))
	}
	if err := confirmCluster(ctx, s.cfg.Clusters, c); err != nil {
		reason := "revoked"
		if connect.CodeOf(err) == connect.CodeUnavailable {
			reason = "catching_up"
		}
		s.metrics.refused.WithLabelValues(reason).Inc()
		s.refusals.Warn("agent credential not confirmed", "cluster_id", c.ClusterID, "credential_id", c.ID, "err", err)
		return agentcred.Claims{}, err
	}
	return c, nil
}

// confirmCluster says whether the credential's cluster still exists as the
// one it was issued for. The projection may lag the stream (a cluster
// created, its agent enrolled and connecting within milliseconds), so a
// miss is only final once the projection has read the stream to its end.
// Telling a lagging agent "revoked" would make it throw away a good
// credential; it is told to come back instead.
func confirmCluster(ctx context.Context, cat Clusters, c agentcred.Claims) error {
	if cl, ok := cat.Get(c.ClusterID); ok && cl.UID == c.ClusterUID {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := cat.Sync(sctx); err != nil {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("confirming the credential's cluster: %w", err))
	}
	if cl, ok := cat.Get(c.ClusterID); ok && cl.UID == c.ClusterUID {
		return nil
	}
	return connect.NewError(connect.CodeUnauthenticated, errors.New("credential revoked"))
}

// Revoke closes the streams of a cluster that was deleted: a subscriber
// follows the cluster events and calls it for each deletion.
func (s *Server) Revoke(clusterID, uid string) {
	s.mu.Lock()
	var gone []*session
	for _, sess := range s.sessions {
		if sess.cluster == clusterID && sess.uid() == uid {
			gone = append(gone, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range gone {
		s.metrics.refused.WithLabelValues("revoked").Inc()
		sess.log.Warn("cluster deleted: closing its agent's stream")
		sess.close("cluster deleted")
		sess.conn.Abort()
	}
}

func (s *Server) serve(ctx context.Context, conn *tunnel.Conn, claims agentcred.Claims) error {
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
	if hello.ClusterId != claims.ClusterID {
		// The one thing an agent must never do: serve a cluster that is
		// not its own.
		s.metrics.refused.WithLabelValues("wrong_cluster").Inc()
		s.log.Warn("agent claimed another cluster", "credential_cluster_id", claims.ClusterID, "hello_cluster_id", hello.ClusterId, "credential_id", claims.ID)
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("the credential is for cluster %q, not %q", claims.ClusterID, hello.ClusterId))
	}
	if !s.cfg.NATS.IsConnected() {
		// Its requests could not reach it: send the agent elsewhere.
		return connect.NewError(connect.CodeUnavailable, errors.New("subscriber has no NATS connection"))
	}
	if slices.Contains(hello.HeldSubscribers, s.cfg.ID) {
		// The agent would rather have its streams on different
		// subscribers; refused before this one takes any request.
		return connect.NewError(connect.CodeAlreadyExists, errors.New("this subscriber already holds a stream of the agent"))
	}
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return connect.NewError(connect.CodeUnavailable, errors.New("subscriber is draining"))
	}
	sess := newSession(s, conn, hello, claims)
	s.sessions[sess.id] = sess
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess.id)
		s.mu.Unlock()
		s.wg.Done()
	}()
	// A deletion between the credential check and here found no session
	// to close; look again now that Revoke would find this one.
	if cl, ok := s.cfg.Clusters.Get(claims.ClusterID); !ok || cl.UID != claims.ClusterUID {
		sess.close("cluster deleted")
		return connect.NewError(connect.CodeUnauthenticated, errors.New("credential revoked"))
	}

	log := sess.log
	if err := sess.listen(); err != nil {
		log.Error("subscribing for the agent's requests", "err", err)
		sess.close("subscriber lost NATS")
		return connect.NewError(connect.CodeUnavailable, err)
	}
	err = conn.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Welcome{Welcome: &tetherv1.Welcome{
		SessionId: sess.id, SubscriberId: s.cfg.ID, PingIntervalMs: uint32(s.cfg.Keepalive.Interval.Milliseconds()),
	}}})
	close(sess.hello)
	if err != nil {
		sess.close("agent stream broke")
		return err
	}
	log.Info("agent connected", "agent_version", hello.AgentVersion, "kubernetes_version", hello.KubernetesVersion)
	s.event(sess, &tetherv1.AgentEvent{Kind: &tetherv1.AgentEvent_Connected{Connected: sess.announced}})
	s.reportEnded(sess, hello.EndedSessions)
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()

	err = conn.Run(ctx, sess.handle)
	sess.close(fmt.Sprintf("agent of cluster %q disconnected", sess.cluster))
	log.Info("agent disconnected", "err", err)
	reason := "stream ended"
	if err != nil {
		reason = err.Error()
	}
	s.event(sess, &tetherv1.AgentEvent{Kind: &tetherv1.AgentEvent_Disconnected{Disconnected: &tetherv1.AgentDisconnected{Reason: reason}}})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Drain moves every agent away without a gap, then finishes: it refuses
// new streams, tells each agent to connect elsewhere (GoAway) and waits,
// up to MoveTimeout, until each has a new stream and says so; then it takes
// no new requests, waits for those in flight until ctx ends, and closes
// the streams. An agent that does not answer is treated as before GoAway:
// its requests stop here and it reconnects once its stream closes.
func (s *Server) Drain(ctx context.Context) {
	s.mu.Lock()
	s.draining = true
	sessions := s.sessionList()
	s.mu.Unlock()
	for _, sess := range sessions {
		if err := sess.conn.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_GoAway{GoAway: &tetherv1.GoAway{Reason: "subscriber shutting down"}}}); err != nil {
			sess.log.Warn("telling the agent to move", "err", err)
		}
	}
	moveCtx, cancel := context.WithTimeout(ctx, s.cfg.MoveTimeout)
	for _, sess := range sessions {
		select {
		case <-sess.moved:
		case <-sess.done:
		case <-moveCtx.Done():
		}
	}
	cancel()
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
	// No session is left: a router still probing this process hears "no
	// responders" now, not once the process has exited.
	_ = s.probes.Unsubscribe()
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
