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
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tether-dev/tether/lib/assertion"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/kstatus"
	"github.com/tether-dev/tether/lib/ratelog"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
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
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tether_request_duration_seconds", Help: "Time to the response head at this hop.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"hop"}),
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
	for _, c := range []prometheus.Collector{g.requests, g.duration, g.upgraded, g.upgrades, g.refusals} {
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

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	cluster, rest, err := g.target(r)
	head := g.cfg.Limits.headTooLarge(r)
	code := 0
	defer func() { g.requests.WithLabelValues(verb(r.Method), strconv.Itoa(code)).Inc() }()
	refuse := func(status int, reason, msg string) {
		code = status
		g.refusals.WithLabelValues(reason).Inc()
		st := kstatus.New(status, msg)
		if status == http.StatusTooManyRequests {
			st = st.WithRetryAfter(time.Second)
		}
		kstatus.Write(w, st)
	}
	switch {
	case head != "":
		refuse(http.StatusRequestHeaderFieldsTooLarge, "head_too_large", "the request head is too large: "+head)
		return
	case errors.Is(err, errDotSegment):
		refuse(http.StatusBadRequest, "bad_path", "paths may not contain . or .. segments")
		return
	case err != nil && g.ByHost(r):
		refuse(http.StatusNotFound, "no_cluster_host", "the server could not find the requested resource: cluster host names are {id}.DOMAIN, one label a cluster id")
		return
	case err != nil:
		refuse(http.StatusNotFound, "no_cluster_path", "the server could not find the requested resource: paths are /clusters/{id}/...")
		return
	}
	user, err := g.authenticate(r)
	switch {
	case errors.Is(err, identity.ErrUnavailable):
		g.authLog.Warn("cannot authenticate", "err", err)
		refuse(http.StatusServiceUnavailable, "identity_unavailable", "the identity provider cannot be reached; retry")
		return
	case err != nil:
		// Why a token failed is for the operator; the client learns only
		// that it did, as from a kube-apiserver.
		g.authLog.Debug("authentication failed", "err", err)
		w.Header().Set("Www-Authenticate", `Bearer realm="tether"`)
		refuse(http.StatusUnauthorized, "unauthenticated", "Unauthorized")
		return
	}
	upgrade := tunnel.Upgrade(r.Header)
	admit, kind := g.short, "inflight"
	if longRunning(r.URL.Query(), rest, upgrade != "") {
		admit, kind = g.long, "long_running"
	}
	release, refusal := admit.admit(user.Name, cluster)
	if refusal != "" {
		refuse(http.StatusTooManyRequests, kind+"_limit", refusal)
		return
	}
	defer release()
	if max := g.cfg.Limits.MaxBodyBytes; max > 0 && upgrade == "" && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > max {
			refuse(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body of %d bytes exceeds %d", r.ContentLength, max))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
	}

	reqID := newRequestID()
	ctx := g.cfg.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := g.cfg.Tracer.Start(ctx, "gateway "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("tether.request_id", reqID), attribute.String("tether.cluster_id", cluster), attribute.String("enduser.id", user.Name)))
	defer span.End()
	log := telemetry.LogWith(ctx, g.cfg.Logger).With("request_id", reqID, "cluster_id", cluster, "user", user.Name, "method", r.Method, "path", rest)
	w.Header().Set("X-Tether-Request-Id", reqID)

	// Before anything else reads the request: only the identity the
	// gateway authenticated may reach a cluster, and whom it asked to act
	// as only inside what the gateway signs.
	asked, err := requestedImpersonation(r.Header)
	if err != nil {
		refuse(http.StatusBadRequest, "bad_impersonation", err.Error())
		return
	}
	tunnel.ScrubCredentials(r.Header)
	noBody := r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	open := newOpen(r, reqID, cluster, rest, user, noBody)
	if upgrade != "" {
		// exec, attach and port-forward: HTTP/1.1 upgrades to SPDY or
		// WebSocket, whose bytes follow the 101 on the same connection.
		if r.ProtoMajor != 1 || !noBody {
			refuse(http.StatusBadRequest, "bad_upgrade", "an upgrade request must be HTTP/1.1 and carry no body")
			return
		}
		open.Upgrade, open.End = upgrade, false
	}
	if open.SignedIdentity, err = g.sign(open, user, asked, time.Now()); err != nil {
		log.Error("signing the identity", "err", err)
		refuse(http.StatusInternalServerError, "signing", "the gateway could not sign the request's identity")
		return
	}
	g.cfg.Propagator.Inject(ctx, propagation.MapCarrier(open.Trace))
	// What the router would refuse is refused here, with the reason.
	frame := &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: open}}
	if err := tunnel.Validate(frame); err != nil {
		refuse(http.StatusBadRequest, "uncarriable", "the request cannot be carried: "+err.Error())
		return
	}
	if _, err := tunnel.Encode(frame); err != nil {
		refuse(http.StatusRequestHeaderFieldsTooLarge, "head_too_large", "the request head is too large or not valid UTF-8: "+err.Error())
		return
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	uploadFailed := make(chan struct{})
	var uploadErr error
	call, f, err := g.send(ctx, frame, r.Body, func(err error) {
		uploadErr = err
		close(uploadFailed)
		cancel()
	})
	defer call.end()
	receive := call.receive
	if unreachable(err) {
		code = http.StatusServiceUnavailable
		log.Warn("router unreachable", "err", err)
		kstatus.Write(w, kstatus.New(code, "no router is reachable").WithRetryAfter(time.Second))
		return
	}
	if err != nil {
		select {
		case <-uploadFailed:
			var tooLarge *http.MaxBytesError
			if errors.As(uploadErr, &tooLarge) {
				// Cut off before the cluster saw all of it, so nothing ran.
				refuse(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body exceeds %d bytes", tooLarge.Limit))
				return
			}
			// The client's body broke off; never let that look like success.
			panic(http.ErrAbortHandler)
		default:
		}
		if ctx.Err() != nil {
			return
		}
		code = http.StatusServiceUnavailable
		log.Warn("router failed before the response", "err", err)
		kstatus.Write(w, kstatus.New(code, "the request could not be routed: "+err.Error()).WithRetryAfter(time.Second))
		return
	}
	resp := f.GetResponse()
	if resp == nil {
		code = http.StatusBadGateway
		kstatus.Error(w, code, "router answered with a frame that is not a response")
		return
	}
	code = int(resp.Status)
	g.agentKeys.learn(cluster, resp.AgentKey)
	if call.upgrade != nil {
		if code == http.StatusSwitchingProtocols {
			g.duration.WithLabelValues("gateway").Observe(time.Since(start).Seconds())
			span.SetAttributes(attribute.Int("http.response.status_code", code))
			g.switchProtocols(ctx, cancel, log, w, resp, call)
			return
		}
		// Refused (a Status from the cluster or from Tether): no bytes follow.
		_ = call.upgrade.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}})
		_ = call.upgrade.CloseRequest()
	} else if code == http.StatusSwitchingProtocols {
		code = http.StatusBadGateway
		kstatus.Error(w, code, "the cluster switched protocols on a request that asked for no upgrade")
		return
	}
	tunnel.ToHTTP(resp.Headers, w.Header(), nil)
	w.WriteHeader(code)
	g.duration.WithLabelValues("gateway").Observe(time.Since(start).Seconds())
	span.SetAttributes(attribute.Int("http.response.status_code", code))
	if resp.End {
		_, _ = w.Write(resp.Body)
		finish(receive)
		return
	}
	// The head goes out now, not with the first body bytes: a watch may
	// have no event for minutes, and its client waits for the head (kubectl
	// delete --wait did, until its timeout).
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	for {
		f, err := receive()
		if err != nil {
			if ctx.Err() == nil {
				log.Info("response broken off", "err", err)
			}
			// Break the client's connection rather than end the body
			// cleanly: a cut-off list must not look complete, and a watch
			// client must see its stream fail so it resumes.
			panic(http.ErrAbortHandler)
		}
		d := f.GetData()
		if d == nil {
			continue
		}
		if len(d.Chunk) > 0 {
			if _, err := w.Write(d.Chunk); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if d.End {
			log.Debug("served", "code", code, "duration", time.Since(start))
			finish(receive)
			return
		}
	}
}

// newOpen is the envelope's head for r, whose headers were scrubbed: the
// same whether the Host or the path named the cluster.
func newOpen(r *http.Request, reqID, cluster, rest string, user identity.User, noBody bool) *tetherv1.Open {
	open := &tetherv1.Open{
		RequestId: reqID,
		ClusterId: cluster,
		Method:    r.Method,
		Path:      rest,
		Query:     r.URL.RawQuery,
		Headers:   tunnel.FromHTTP(r.Header, nil),
		Tenants:   user.Tenants,
		Trace:     map[string]string{},
		End:       noBody,
	}
	if r.ContentLength > 0 {
		open.Headers = append(open.Headers, &tetherv1.Header{Name: "Content-Length", Values: []string{strconv.FormatInt(r.ContentLength, 10)}})
	}
	return open
}

// routerCall is one request at a router, as the gateway sees it.
type routerCall struct {
	receive func() (*tetherv1.Frame, error)
	// upgrade is the stream an upgraded connection's bytes go out on; nil
	// for other requests.
	upgrade proxyStream
	// end ends the call whatever state it is in: after a clean end it does
	// nothing, otherwise the router sees the stream reset. Cancelling the
	// context alone does not end an HTTP/2 stream whose request body is
	// still open.
	end func()
}

// send hands the request to a router and waits for its first answer (the
// response head, or the error that came first): a Call when it has no body
// (one HTTP/2 request of known length), else a Proxy stream with the body
// streamed behind the Open, or, for an upgrade, the connection's bytes
// once it has switched. The routers are tried in order: one that cannot be
// reached is passed over, and so is one that fails a read without a body
// before answering (it died with it), since a read changes nothing. The
// call returned is always safe to end.
func (g *Gateway) send(ctx context.Context, open *tetherv1.Frame, body io.Reader, uploadFailed func(error)) (routerCall, *tetherv1.Frame, error) {
	o := open.GetOpen()
	read := o.GetEnd() && !tunnel.Mutates(o) && o.GetUpgrade() == ""
	var err error
	for _, i := range g.routerOrder() {
		var call routerCall
		call, err = g.sendTo(ctx, g.cfg.Routers[i], open, body, uploadFailed)
		if err == nil {
			var f *tetherv1.Frame
			if f, err = call.receive(); err == nil {
				return call, f, nil
			}
			if ctx.Err() != nil || !(unreachable(err) || read) {
				return call, nil, err
			}
			call.end()
		}
		if ctx.Err() != nil {
			break
		}
		if unreachable(err) {
			// Nothing reached that router: another may take the request.
			g.down[i].Store(time.Now().Add(routerDownFor).UnixNano())
			g.cfg.Logger.Warn("router unreachable; trying the next", "router", i, "err", err)
			continue
		}
		if !read {
			break
		}
		g.cfg.Logger.Warn("router failed a read before answering; trying the next", "router", i, "err", err)
	}
	return routerCall{receive: func() (*tetherv1.Frame, error) { return nil, err }, end: func() {}}, nil, err
}

// routerDownFor is how long a router that could not be reached is passed
// over.
const routerDownFor = time.Second

// routerOrder is the routers to try: those not passed over, in order, then
// the rest (one may be back).
func (g *Gateway) routerOrder() []int {
	now := time.Now().UnixNano()
	up, down := make([]int, 0, len(g.cfg.Routers)), []int(nil)
	for i := range g.cfg.Routers {
		if g.down[i].Load() > now {
			down = append(down, i)
		} else {
			up = append(up, i)
		}
	}
	return append(up, down...)
}

// unreachable reports whether err means the request reached no router:
// its connection could not be made.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (g *Gateway) sendTo(ctx context.Context, router tetherv1connect.ProxyServiceClient, open *tetherv1.Frame, body io.Reader, uploadFailed func(error)) (routerCall, error) {
	if open.GetOpen().GetEnd() {
		ss, err := router.Call(ctx, connect.NewRequest(open))
		if err != nil {
			return routerCall{}, err
		}
		return routerCall{
			receive: func() (*tetherv1.Frame, error) {
				if ss.Receive() {
					return ss.Msg(), nil
				}
				if err := ss.Err(); err != nil {
					return nil, err
				}
				return nil, io.EOF
			},
			end: func() { _ = ss.Close() },
		}, nil
	}
	stream := router.Proxy(ctx)
	// Closing the response resets an HTTP/2 stream that is still open, the
	// request side included; after a clean end it only frees the stream.
	call := routerCall{receive: stream.Receive, end: func() { _ = stream.CloseResponse() }}
	if err := stream.Send(open); err != nil {
		// Send says only that the stream is gone; Receive says why.
		if _, rerr := stream.Receive(); rerr != nil {
			err = rerr
		}
		call.end()
		return routerCall{}, err
	}
	if open.GetOpen().GetUpgrade() != "" {
		call.upgrade = stream
		return call, nil
	}
	go sendBody(stream, body, uploadFailed)
	return call, nil
}

// finish reads the router's end of stream, so the call ends cleanly
// instead of being reset when the handler's context is cancelled.
func finish(receive func() (*tetherv1.Frame, error)) {
	for {
		if _, err := receive(); err != nil {
			return
		}
	}
}

type proxyStream interface {
	Send(*tetherv1.Frame) error
	CloseRequest() error
}

// sendBody streams the request body to the router; the router's HTTP/2
// flow control, and behind it the agent's credit, pace it.
func sendBody(stream proxyStream, body io.Reader, fail func(error)) {
	bp := tunnel.GetChunk()
	defer tunnel.PutChunk(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if serr := stream.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: buf[:n]}}}); serr != nil {
				return
			}
		}
		if errors.Is(err, io.EOF) {
			_ = stream.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}})
			_ = stream.CloseRequest()
			return
		}
		if err != nil {
			// The client broke off its upload, or it grew too large:
			// cancel the whole request.
			fail(err)
			return
		}
	}
}

// verb bounds the method label to the methods Kubernetes serves.
func verb(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

func (g *Gateway) authenticate(r *http.Request) (identity.User, error) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return identity.User{}, identity.ErrUnknown
	}
	return g.cfg.Auth.Authenticate(r.Context(), strings.TrimSpace(token))
}

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
