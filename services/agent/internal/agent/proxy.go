package agent

import (
	"context"
	"encoding/json"
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

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/kstatus"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
)

// serve answers one request from the tunnel by calling the kube-apiserver as
// the end user. Cancelling the stream cancels the call.
func (a *Agent) serve(ctx context.Context, log *slog.Logger, s *tunnel.Stream) {
	head, err := s.Head(ctx)
	if err != nil {
		return
	}
	open := head.GetOpen()
	if open == nil {
		s.Reset(tetherv1.ResetCode_RESET_CODE_PROTOCOL, "stream did not start with Open")
		return
	}
	ctx = a.cfg.Propagator.Extract(ctx, propagation.MapCarrier(open.Trace))
	ctx, span := a.cfg.Tracer.Start(ctx, "agent "+open.Method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("tether.request_id", open.RequestId), attribute.String("tether.cluster_id", open.ClusterId)))
	defer span.End()
	log = telemetry.LogWith(ctx, log).With("request_id", open.RequestId, "method", open.Method, "path", open.Path)

	if a.draining.Load() {
		s.Reset(tetherv1.ResetCode_RESET_CODE_REFUSED, "agent is shutting down")
		return
	}
	if open.ClusterId != a.cfg.ClusterID {
		// The subscriber routes by cluster; this only fires on a bug, and
		// then an agent must never serve another cluster's request.
		log.Error("request for another cluster refused", "request_cluster", open.ClusterId)
		s.Reset(tetherv1.ResetCode_RESET_CODE_REFUSED, "agent serves cluster "+a.cfg.ClusterID)
		return
	}
	asserted, refused := a.admit.admit(open, time.Now())
	if refused != nil {
		a.metrics.refused.WithLabelValues(refused.reason).Inc()
		a.failWith(s, log, refused.status)
		return
	}
	who := caller{user: asserted.GetIdentity(), as: asserted.GetImpersonate()}
	if who.as != nil {
		// kubectl --as: the cluster decides, as it would directly. Behind
		// a front proxy it does so itself: the user is authenticated, and
		// asks to impersonate.
		if a.cfg.FrontProxy == nil {
			if st := a.mayImpersonate(ctx, who.user, who.as); st != nil {
				a.metrics.refused.WithLabelValues("impersonation").Inc()
				a.failWith(s, log, *st)
				return
			}
			log.Info("acting as whom the user asked, with the cluster's leave", "user", who.user.GetUser(), "as_user", who.as.GetUser(), "as_groups", who.as.GetGroups())
		} else {
			log.Info("the user asks to act as another; the kube-apiserver decides", "user", who.user.GetUser(), "as_user", who.as.GetUser(), "as_groups", who.as.GetGroups())
		}
	}
	if id := who.effective(); len(systemNames(id)) > 0 {
		// Allowed by name (break-glass), and never quietly.
		a.metrics.privileged.Inc()
		log.Warn("request runs as an allowed Kubernetes system identity", "user", id.User, "system_names", systemNames(id))
	}
	a.metrics.inflight.Inc()
	defer a.metrics.inflight.Dec()
	if tunnel.Mutates(open) {
		a.serveMutation(ctx, log, s, open, who)
		return
	}

	// The stream's end (a Reset from the caller, or the tunnel lost)
	// cancels the call to the kube-apiserver.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.Done():
			cancel()
		case <-ctx.Done():
		}
	}()

	req, err := a.request(ctx, open, who, s)
	if err != nil {
		a.fail(s, log, http.StatusBadRequest, err.Error())
		return
	}
	a.cfg.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	rt := a.cfg.APITransport
	if open.Upgrade != "" {
		if rt = a.cfg.UpgradeTransport; rt == nil {
			a.fail(s, log, http.StatusNotImplemented, "this agent cannot carry upgraded connections")
			return
		}
	}
	start := time.Now()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return // the caller went away; nobody to answer
		}
		span.SetStatus(codes.Error, err.Error())
		a.fail(s, log, http.StatusServiceUnavailable, fmt.Sprintf("agent of cluster %q cannot reach its kube-apiserver: %v", a.cfg.ClusterID, err))
		return
	}
	defer resp.Body.Close()
	a.metrics.duration.WithLabelValues("agent").Observe(time.Since(start).Seconds())
	a.metrics.requests.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
	span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if open.Upgrade == "" {
			a.fail(s, log, http.StatusBadGateway, "the kube-apiserver switched protocols unasked")
			return
		}
		a.switchProtocols(ctx, log, s, resp)
		return
	}

	rh := &tetherv1.Response{Status: uint32(resp.StatusCode), Headers: tunnel.FromHTTP(resp.Header, nil)}
	buf := tunnel.GetChunk()
	defer tunnel.PutChunk(buf)
	// read is body already read, to go out after the head.
	var read []byte
	switch n := resp.ContentLength; {
	case n == 0 || req.Method == http.MethodHead:
		rh.End = true
	case n > 0 && n <= int64(len(*buf)) && int(n) <= s.Credit():
		// Most API responses are small and complete: send them whole with
		// the head, one frame on every hop.
		if _, err := io.ReadFull(resp.Body, (*buf)[:n]); err != nil {
			a.fail(s, log, http.StatusBadGateway, "reading the kube-apiserver response: "+err.Error())
			return
		}
		rh.Body, rh.End = (*buf)[:n], true
	case n < 0 && !tunnel.Streams(req.URL.Query(), open.Path) && !strings.Contains(open.Path, "/proxy"):
		// No length, but not a watch either (a list, for one): what comes
		// within holdBack, up to a chunk, goes with the head, and if that
		// was all, whole. A hop lost after a head but before its body
		// would cost the client the whole read; a hop lost before the
		// head costs only a retry. (Not through the kube-apiserver's
		// proxy to a pod or a service, whose answer may stream.)
		var ok bool
		if read, ok = a.startBody(ctx, log, s, rh, resp.Body, *buf); !ok || rh.End {
			return
		}
		if a.sendRest(ctx, log, s, read, resp.Body, -1) {
			log.Debug("served", "code", resp.StatusCode, "duration", time.Since(start))
		}
		return
	}
	if !a.sendHead(s, log, rh) || rh.End {
		return
	}
	// read is there only when the length is not known.
	if a.sendRest(ctx, log, s, read, resp.Body, resp.ContentLength) {
		log.Debug("served", "code", resp.StatusCode, "duration", time.Since(start))
	}
}

// holdBack is how long the start of a body of unknown length waits for
// more before its head goes: long enough that a list arrives whole in one
// frame, short enough that a slow stream is not held back.
const holdBack = 5 * time.Millisecond

// startBody reads the start of a body of unknown length into buf: a body
// that ends within it, and within the credit, goes whole in the head, one
// frame on every hop. Otherwise the head goes alone once buf is full, and
// what was read is returned for the caller to send next. And when
// a.holdBack passes while a read still waits, a timer sends the head and
// what came so far at once, so a slow stream is not held back. It returns
// false when nothing more may be sent.
func (a *Agent) startBody(ctx context.Context, log *slog.Logger, s *tunnel.Stream, rh *tetherv1.Response, body io.Reader, buf []byte) ([]byte, bool) {
	var (
		mu       sync.Mutex
		n        int  // read into buf
		sent     int  // of buf[:n], what went (with the head, or after it)
		headSent bool // the head went
		ok       = true
		ended    bool // the body ended
		readErr  error
	)
	sendHeadLocked := func() {
		headSent = true
		if ended && n <= s.Credit() {
			rh.Body, rh.End, sent = buf[:n], true, n
		}
		ok = a.sendHead(s, log, rh)
	}
	timer := time.AfterFunc(a.holdBack, func() {
		mu.Lock()
		defer mu.Unlock()
		if headSent {
			return
		}
		if sendHeadLocked(); ok && sent < n {
			if _, err := s.WriteContext(ctx, buf[sent:n]); err != nil {
				ok = false
				return
			}
			sent = n
		}
	})
	defer timer.Stop()
	for {
		// A read fills buf past n only: what the timer may be sending,
		// buf[:n], is never written meanwhile.
		k, err := body.Read(buf[n:])
		mu.Lock()
		n += k
		switch {
		case errors.Is(err, io.EOF):
			ended = true
		case err != nil:
			readErr = err
		}
		if !headSent && readErr == nil && (ended || n == len(buf)) {
			sendHeadLocked()
		}
		if !headSent && readErr == nil {
			mu.Unlock()
			continue
		}
		timer.Stop()
		wasSent, good, rest := headSent, ok, buf[sent:n]
		mu.Unlock()
		switch {
		case readErr != nil && !wasSent:
			a.fail(s, log, http.StatusBadGateway, "reading the kube-apiserver response: "+readErr.Error())
			return nil, false
		case readErr != nil:
			log.Warn("response body broken off", "err", readErr)
			s.Reset(tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "kube-apiserver response broken off: "+readErr.Error())
			return nil, false
		}
		return rest, good
	}
}

// sendHead sends a response head, or, when the tunnel cannot carry it (a
// header that is not UTF-8, a status out of range), says so instead of
// leaving the caller waiting.
func (a *Agent) sendHead(s *tunnel.Stream, log *slog.Logger, rh *tetherv1.Response) bool {
	// The gateway adds a MAC for this key to the cluster's next signed
	// identities, which this agent checks at a fraction of a signature's
	// cost (ADR 011).
	rh.AgentKey = a.admit.cfg.Verifier.AgentKey()
	if err := s.SendHead(&tetherv1.Frame{Kind: &tetherv1.Frame_Response{Response: rh}}); err != nil {
		a.fail(s, log, http.StatusBadGateway, "the kube-apiserver's response cannot be carried: "+err.Error())
		return false
	}
	return true
}

// sendRest sends the body after its head: what was read already, then
// the rest as it comes (length, if known, counts only the rest). A body
// that breaks off resets the stream. It reports whether all of it went.
func (a *Agent) sendRest(ctx context.Context, log *slog.Logger, s *tunnel.Stream, read []byte, body io.Reader, length int64) bool {
	if len(read) > 0 {
		if _, err := s.WriteContext(ctx, read); err != nil {
			return false
		}
	}
	buf := tunnel.GetChunk()
	defer tunnel.PutChunk(buf)
	if err := copyBody(ctx, s, body, length, *buf); err != nil {
		if ctx.Err() == nil {
			log.Warn("response body broken off", "err", err)
			s.Reset(tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "kube-apiserver response broken off: "+err.Error())
		}
		return false
	}
	return true
}

// request builds the call to the kube-apiserver: the client's method, path,
// query and headers, minus anything claiming an identity, plus whom it
// runs as, as admitted (setIdentity).
func (a *Agent) request(ctx context.Context, open *tetherv1.Open, who caller, s *tunnel.Stream) (*http.Request, error) {
	u := *a.apiBase
	u.RawPath = a.apiBase.Path + open.Path
	path, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("bad request path %q: %w", open.Path, err)
	}
	u.Path = path
	u.RawQuery = open.Query
	var body io.ReadCloser = http.NoBody
	if open.Upgrade != "" {
		// The connection's bytes follow the 101; credit for them now saves
		// a round trip once it comes.
		if err := s.Grant(s.Window()); err != nil {
			return nil, err
		}
	} else if !open.End {
		if err := s.Grant(s.Window()); err != nil {
			return nil, err
		}
		body = io.NopCloser(streamReader{ctx: ctx, s: s})
	}
	req, err := http.NewRequestWithContext(ctx, open.Method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("bad request: %w", err)
	}
	tunnel.ToHTTP(open.Headers, req.Header, nil)
	// The gateway scrubbed these already; an agent never trusts that.
	tunnel.ScrubCredentials(req.Header)
	// The cluster's audit log names each request by Tether's id, every
	// attempt alike: it ties the two records together, and shows a
	// request that reached the kube-apiserver twice.
	req.Header.Set("Audit-Id", open.RequestId)
	req.ContentLength = -1
	if open.End || open.Upgrade != "" {
		req.ContentLength = 0
	} else if cl := req.Header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			req.ContentLength = n
		}
	}
	req.Header.Del("Content-Length")
	if open.Upgrade != "" {
		tunnel.SetUpgrade(req.Header, open.Upgrade)
	}
	if err := a.setIdentity(req.Header, who); err != nil {
		return nil, err
	}
	return req, nil
}

// fail answers with a Kubernetes Status, or resets the stream if the answer
// cannot be sent.
func (a *Agent) fail(s *tunnel.Stream, log *slog.Logger, code int, msg string) {
	a.failWith(s, log, kstatus.New(code, msg))
}

// failWith answers with st.
func (a *Agent) failWith(s *tunnel.Stream, log *slog.Logger, st kstatus.Status) {
	log.Warn("request failed at the agent", "code", st.Code, "err", st.Message)
	a.metrics.requests.WithLabelValues(strconv.Itoa(st.Code)).Inc()
	if err := s.SendHead(&tetherv1.Frame{Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{
		Status: uint32(st.Code), Headers: tunnel.FromHTTP(st.Header(), nil), Body: st.Body(), End: true,
	}}}); err != nil {
		s.Reset(tetherv1.ResetCode_RESET_CODE_INTERNAL, st.Message)
	}
}

// copyBody streams the response as it arrives, a watch event the moment
// the kube-apiserver writes it, and half-closes the stream. When the length
// is known, the last bytes carry the end.
func copyBody(ctx context.Context, s *tunnel.Stream, body io.Reader, length int64, buf []byte) error {
	var sent int64
	for {
		n, err := body.Read(buf)
		if n > 0 {
			sent += int64(n)
			write := s.WriteContext
			if sent == length {
				write = s.WriteLast
			}
			if _, werr := write(ctx, buf[:n]); werr != nil {
				return werr
			}
			if sent == length {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return s.CloseWrite()
		}
		if err != nil {
			return err
		}
	}
}

type streamReader struct {
	ctx context.Context
	s   *tunnel.Stream
}

func (r streamReader) Read(p []byte) (int, error) { return r.s.ReadContext(r.ctx, p) }

func decodeJSON(r io.Reader, v any) error {
	return json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(v)
}
