package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/kstatus"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/gateway/internal/identity"
)

// ServeHTTP runs a client request through the gateway's stages, in the
// manner of the kube-apiserver's filter chain: each stage either hands the
// request on or answers the client itself.
//
//	target → authenticate → admit → build → send → respond
//
// Whatever a stage took (an admission slot, the span, the router's call)
// is given back by done, in reverse, however the request ended.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := &request{g: g, w: w, r: r, start: time.Now()}
	defer q.done()
	_ = q.target() && q.authenticate() && q.admit() && q.build() && q.send() && q.respond()
}

// request is one client request at the gateway. Each stage fills in what
// the next ones read; none goes back.
type request struct {
	g     *Gateway
	w     http.ResponseWriter
	r     *http.Request
	start time.Time
	// code is the status the client got, for the requests metric; 0 when
	// it got none (its connection was broken off, or it went away).
	code int
	undo []func()

	// target
	cluster, rest string
	// authenticate
	user identity.User
	// admit
	upgrade string
	// build
	id     string
	ctx    context.Context
	cancel context.CancelFunc
	span   trace.Span
	log    *slog.Logger
	asked  *tetherv1.Identity // whom the user asked to act as, if anyone
	frame  *tetherv1.Frame    // the Open
	// send
	call         routerCall
	head         *tetherv1.Response
	uploadFailed chan struct{}
	uploadErr    error // set before uploadFailed closes
}

func (q *request) done() {
	for i := len(q.undo) - 1; i >= 0; i-- {
		q.undo[i]()
	}
	q.g.requests.WithLabelValues(verb(q.r.Method), strconv.Itoa(q.code)).Inc()
}

// refuse answers the client with a Status of the gateway's own, counted
// by reason; it returns false, which ends the chain.
func (q *request) refuse(status int, reason, msg string) bool {
	q.code = status
	q.g.refusals.WithLabelValues(reason).Inc()
	st := kstatus.New(status, msg)
	if status == http.StatusTooManyRequests {
		st = st.WithRetryAfter(time.Second)
	}
	kstatus.Write(q.w, st)
	return false
}

// target finds the cluster the request is for, and refuses a head the
// envelope could not carry before anything else reads it.
func (q *request) target() bool {
	var err error
	q.cluster, q.rest, err = q.g.target(q.r)
	head := q.g.cfg.Limits.headTooLarge(q.r)
	switch {
	case head != "":
		return q.refuse(http.StatusRequestHeaderFieldsTooLarge, "head_too_large", "the request head is too large: "+head)
	case errors.Is(err, errDotSegment):
		return q.refuse(http.StatusBadRequest, "bad_path", "paths may not contain . or .. segments")
	case err != nil && q.g.ByHost(q.r):
		return q.refuse(http.StatusNotFound, "no_cluster_host", "the server could not find the requested resource: cluster host names are {id}.DOMAIN, one label a cluster id")
	case err != nil:
		return q.refuse(http.StatusNotFound, "no_cluster_path", "the server could not find the requested resource: paths are /clusters/{id}/...")
	}
	return true
}

// authenticate finds who asks, from their bearer token.
func (q *request) authenticate() bool {
	var err error
	q.user, err = q.g.authenticate(q.r)
	switch {
	case errors.Is(err, identity.ErrUnavailable):
		q.g.authLog.Warn("cannot authenticate", "err", err)
		return q.refuse(http.StatusServiceUnavailable, "identity_unavailable", "the identity provider cannot be reached; retry")
	case err != nil:
		// Why a token failed is for the operator; the client learns only
		// that it did, as from a kube-apiserver.
		q.g.authLog.Debug("authentication failed", "err", err)
		q.w.Header().Set("Www-Authenticate", `Bearer realm="tether"`)
		return q.refuse(http.StatusUnauthorized, "unauthenticated", "Unauthorized")
	}
	return true
}

// admit takes a slot within the user's and the cluster's limits (short and
// long-running requests apart) and bounds the body.
func (q *request) admit() bool {
	q.upgrade = tunnel.Upgrade(q.r.Header)
	admit, kind := q.g.short, "inflight"
	if longRunning(q.r.URL.Query(), q.rest, q.upgrade != "") {
		admit, kind = q.g.long, "long_running"
	}
	release, refusal := admit.admit(q.user.Name, q.cluster)
	if refusal != "" {
		return q.refuse(http.StatusTooManyRequests, kind+"_limit", refusal)
	}
	q.undo = append(q.undo, release)
	r := q.r
	if max := q.g.cfg.Limits.MaxBodyBytes; max > 0 && q.upgrade == "" && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > max {
			return q.refuse(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body of %d bytes exceeds %d", r.ContentLength, max))
		}
		r.Body = http.MaxBytesReader(q.w, r.Body, max)
	}
	return true
}

// build makes the envelope's Open: the request id, the trace, the
// client's headers without anything that claims an identity, and the
// identity the gateway signs for this request alone.
func (q *request) build() bool {
	g, r := q.g, q.r
	q.id = newRequestID()
	ctx := g.cfg.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, q.span = g.cfg.Tracer.Start(ctx, "gateway "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("tether.request_id", q.id), attribute.String("tether.cluster_id", q.cluster), attribute.String("enduser.id", q.user.Name)))
	q.undo = append(q.undo, func() { q.span.End() })
	q.log = telemetry.LogWith(ctx, g.cfg.Logger).With("request_id", q.id, "cluster_id", q.cluster, "user", q.user.Name, "method", r.Method, "path", q.rest)
	q.w.Header().Set("X-Tether-Request-Id", q.id)

	// Before anything else reads the request: only the identity the
	// gateway authenticated may reach a cluster, and whom it asked to act
	// as only inside what the gateway signs.
	var err error
	if q.asked, err = requestedImpersonation(r.Header); err != nil {
		return q.refuse(http.StatusBadRequest, "bad_impersonation", err.Error())
	}
	tunnel.ScrubCredentials(r.Header)
	noBody := r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	open := newOpen(r, q.id, q.cluster, q.rest, q.user, noBody)
	if q.upgrade != "" {
		// exec, attach and port-forward: HTTP/1.1 upgrades to SPDY or
		// WebSocket, whose bytes follow the 101 on the same connection.
		if r.ProtoMajor != 1 || !noBody {
			return q.refuse(http.StatusBadRequest, "bad_upgrade", "an upgrade request must be HTTP/1.1 and carry no body")
		}
		open.Upgrade, open.End = q.upgrade, false
	}
	if open.SignedIdentity, err = g.sign(open, q.user, q.asked, time.Now(), 0); err != nil {
		q.log.Error("signing the identity", "err", err)
		return q.refuse(http.StatusInternalServerError, "signing", "the gateway could not sign the request's identity")
	}
	g.cfg.Propagator.Inject(ctx, propagation.MapCarrier(open.Trace))
	// What the router would refuse is refused here, with the reason.
	q.frame = &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: open}}
	if err := tunnel.Validate(q.frame); err != nil {
		return q.refuse(http.StatusBadRequest, "uncarriable", "the request cannot be carried: "+err.Error())
	}
	if _, err := tunnel.Encode(q.frame); err != nil {
		return q.refuse(http.StatusRequestHeaderFieldsTooLarge, "head_too_large", "the request head is too large or not valid UTF-8: "+err.Error())
	}
	q.ctx, q.cancel = context.WithCancel(ctx)
	q.undo = append(q.undo, q.cancel)
	return true
}

// send hands the request to a router and waits for the response head.
func (q *request) send() bool {
	q.uploadFailed = make(chan struct{})
	call, f, err := q.g.send(q.ctx, q.frame, q.r.Body, q.failUpload, q.resign)
	q.call = call
	q.undo = append(q.undo, call.end)
	var resignErr *resignError
	if errors.As(err, &resignErr) {
		q.log.Error("signing the identity for the next router", "err", resignErr.err)
		return q.refuse(http.StatusInternalServerError, "signing", "the gateway could not sign the request's identity")
	}
	if unreachable(err) {
		q.code = http.StatusServiceUnavailable
		q.log.Warn("router unreachable", "err", err)
		kstatus.Write(q.w, kstatus.New(q.code, "no router is reachable").WithRetryAfter(time.Second))
		return false
	}
	if err != nil {
		select {
		case <-q.uploadFailed:
			var tooLarge *http.MaxBytesError
			if errors.As(q.uploadErr, &tooLarge) {
				// Cut off before the cluster saw all of it, so nothing ran.
				return q.refuse(http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("the request body exceeds %d bytes", tooLarge.Limit))
			}
			// The client's body broke off; never let that look like success.
			panic(http.ErrAbortHandler)
		default:
		}
		if q.ctx.Err() != nil {
			return false
		}
		q.code = http.StatusServiceUnavailable
		q.log.Warn("router failed before the response", "err", err)
		kstatus.Write(q.w, kstatus.New(q.code, "the request could not be routed: "+err.Error()).WithRetryAfter(time.Second))
		return false
	}
	if q.head = f.GetResponse(); q.head == nil {
		q.code = http.StatusBadGateway
		kstatus.Error(q.w, q.code, "router answered with a frame that is not a response")
		return false
	}
	return true
}

// failUpload cancels the whole request when the client's body breaks off
// or grows too large.
func (q *request) failUpload(err error) {
	q.uploadErr = err
	close(q.uploadFailed)
	q.cancel()
}

// resign signs the request's identity again for the handoff-th router it
// goes to: the one before may have counted tries at the agent under the
// signature it had.
func (q *request) resign(handoff uint32) error {
	open := q.frame.GetOpen()
	si, err := q.g.sign(open, q.user, q.asked, time.Now(), handoff)
	if err != nil {
		return &resignError{err}
	}
	open.SignedIdentity = si
	return nil
}

// resignError: the identity could not be signed for the next router.
type resignError struct{ err error }

func (e *resignError) Error() string {
	return "signing the identity for the next router: " + e.err.Error()
}
func (e *resignError) Unwrap() error { return e.err }

// respond writes the cluster's answer: a switch of protocols, a whole
// body, or a body streamed as it comes.
func (q *request) respond() bool {
	g, w, resp := q.g, q.w, q.head
	q.code = int(resp.Status)
	g.agentKeys.learn(q.cluster, resp.AgentKey)
	if q.call.upgrade != nil {
		if q.code == http.StatusSwitchingProtocols {
			q.headSent()
			g.switchProtocols(q.ctx, q.cancel, q.log, w, resp, q.call)
			return true
		}
		// Refused (a Status from the cluster or from Tether): no bytes follow.
		_ = q.call.upgrade.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}})
		_ = q.call.upgrade.CloseRequest()
	} else if q.code == http.StatusSwitchingProtocols {
		q.code = http.StatusBadGateway
		kstatus.Error(w, q.code, "the cluster switched protocols on a request that asked for no upgrade")
		return false
	}
	tunnel.ToHTTP(resp.Headers, w.Header(), nil)
	w.WriteHeader(q.code)
	q.headSent()
	if resp.End {
		_, _ = w.Write(resp.Body)
		finish(q.call.receive)
		return true
	}
	return q.stream()
}

func (q *request) headSent() {
	q.g.duration.WithLabelValues("gateway").Observe(time.Since(q.start).Seconds())
	q.span.SetAttributes(attribute.Int("http.response.status_code", q.code))
}

// stream copies the body to the client as its chunks come.
func (q *request) stream() bool {
	// The head goes out now, not with the first body bytes: a watch may
	// have no event for minutes, and its client waits for the head (kubectl
	// delete --wait did, until its timeout).
	flusher, _ := q.w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	for {
		f, err := q.call.receive()
		if err != nil {
			if q.ctx.Err() == nil {
				q.log.Info("response broken off", "err", err)
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
			if _, err := q.w.Write(d.Chunk); err != nil {
				return false
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if d.End {
			q.log.Debug("served", "code", q.code, "duration", time.Since(q.start))
			finish(q.call.receive)
			return true
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
// before answering (it died with it), since a read changes nothing. A read
// handed on that way is signed again (resign) with the number of its
// hand-off: the router that failed it may have tried it at the agent, and
// the next counts its tries from 0. The call returned is always safe to
// end.
func (g *Gateway) send(ctx context.Context, open *tetherv1.Frame, body io.Reader, uploadFailed func(error), resign func(handoff uint32) error) (routerCall, *tetherv1.Frame, error) {
	o := open.GetOpen()
	read := o.GetEnd() && !tunnel.Mutates(o) && o.GetUpgrade() == ""
	var err error
	var handoff uint32
	reached := false // a router took the request and failed it
	for _, i := range g.routerOrder() {
		if reached {
			handoff++
			if rerr := resign(handoff); rerr != nil {
				g.cfg.Logger.Warn("router failed a read before answering", "err", err)
				err = rerr
				break
			}
			reached = false
		}
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
		reached = true
		g.cfg.Logger.Warn("router failed a read before answering; trying the next, signed again", "router", i, "err", err)
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
