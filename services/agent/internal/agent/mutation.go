package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/kstatus"
	"github.com/tether-dev/tether/lib/tunnel"
)

// keepBody is the most of a mutation's response held for a retry; more
// than any one object (etcd keeps at most 1.5 MiB).
const keepBody = 4 << 20

// serveMutation runs a request that may change the cluster at most once
// per request id (ADR 006): a retry of one this process ran gets the first
// result, one still running waits for it, and one that an earlier attempt
// may have taken to another agent process is answered 503, since whether
// it ran there is unknown.
func (a *Agent) serveMutation(ctx context.Context, log *slog.Logger, s *tunnel.Stream, open *tetherv1.Open, who caller) {
	for {
		o, first := a.memory.begin(open.RequestId)
		if first {
			if open.Attempt > 0 && !a.sessions.own(open.PreviousSessions) {
				a.memory.abandon(o)
				a.metrics.mutations.WithLabelValues("outcome_unknown").Inc()
				a.failWith(s, log, kstatus.New(http.StatusServiceUnavailable, "an earlier attempt of this request reached another agent process, so whether it ran is unknown; it was not run again").WithRetryAfter(time.Second))
				return
			}
			a.runMutation(ctx, log, s, open, who, o)
			return
		}
		select {
		case <-o.done:
		case <-s.Done():
			return
		case <-ctx.Done():
			return
		}
		if o.ran {
			a.metrics.mutations.WithLabelValues("replayed").Inc()
			log.Info("answering a retried mutation with its first result", "code", o.status, "attempt", open.Attempt)
			a.respond(ctx, log, s, o, true)
			return
		}
		// The earlier attempt never reached the kube-apiserver: run it now.
	}
}

// runMutation calls the kube-apiserver and records the result. The call
// outlives the stream: a lost hop (a subscriber that died) must not leave
// a mutation half-known, so it finishes and its result waits for the
// router's next attempt. Only the caller giving up stops it.
func (a *Agent) runMutation(ctx context.Context, log *slog.Logger, s *tunnel.Stream, open *tetherv1.Open, who caller, o *outcome) {
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.MutationTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.Done():
			if tunnel.CodeOf(s.Err()) == tetherv1.ResetCode_RESET_CODE_CANCELED {
				cancel()
			}
		case <-kctx.Done():
		}
	}()
	req, err := a.request(kctx, open, who, s)
	if err != nil {
		a.memory.abandon(o)
		a.fail(s, log, http.StatusBadRequest, err.Error())
		return
	}
	body := &trackedBody{r: req.Body, complete: open.End}
	if !open.End {
		// A body-less request keeps http.NoBody, so it goes out without one.
		req.Body = body
	}
	a.cfg.Propagator.Inject(kctx, propagation.HeaderCarrier(req.Header))
	start := time.Now()
	resp, err := a.cfg.APITransport.RoundTrip(req)
	if err != nil {
		if !body.done() || kctx.Err() != nil && tunnel.CodeOf(s.Err()) == tetherv1.ResetCode_RESET_CODE_CANCELED {
			// The kube-apiserver never had the whole request, or the
			// caller went away: nothing to keep. Another attempt runs it.
			a.memory.abandon(o)
			if s.Err() == nil {
				s.Reset(tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "request body broken off")
			}
			return
		}
		// Sent, but no answer: whether it ran is unknown, and so is the
		// answer to every attempt of it.
		msg := fmt.Sprintf("agent of cluster %q lost its kube-apiserver during the request, which may or may not have run: %v", a.cfg.ClusterID, err)
		st := kstatus.New(http.StatusServiceUnavailable, msg)
		a.memory.finish(o, st.Code, st.Header(), st.Body())
		a.metrics.requests.WithLabelValues(strconv.Itoa(st.Code)).Inc()
		log.Warn("mutation without an answer from the kube-apiserver", "err", err)
		a.respond(ctx, log, s, o, false)
		return
	}
	defer resp.Body.Close()
	a.metrics.duration.WithLabelValues("agent").Observe(time.Since(start).Seconds())
	a.metrics.requests.WithLabelValues(strconv.Itoa(resp.StatusCode)).Inc()
	data, err := io.ReadAll(io.LimitReader(resp.Body, keepBody+1))
	switch {
	case err != nil:
		// It ran; its answer broke off. The status stands, the body is lost.
		a.memory.finishWithoutBody(o, resp.StatusCode, resp.Header)
		log.Warn("mutation response broken off", "err", err)
		s.Reset(tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "kube-apiserver response broken off: "+err.Error())
		return
	case len(data) > keepBody:
		// Too large to keep: the status is kept for a retry, and the
		// body streamed to this attempt.
		a.memory.finishWithoutBody(o, resp.StatusCode, resp.Header)
		a.streamResponse(ctx, log, s, resp, data)
		return
	}
	a.metrics.mutations.WithLabelValues("ran").Inc()
	a.memory.finish(o, resp.StatusCode, resp.Header, data)
	a.respond(ctx, log, s, o, false)
}

// respond sends a mutation's recorded result, if anyone still listens.
func (a *Agent) respond(ctx context.Context, log *slog.Logger, s *tunnel.Stream, o *outcome, replayed bool) {
	if s.Err() != nil {
		return
	}
	header, body := o.header.Clone(), o.body
	if header == nil {
		header = http.Header{}
	}
	if o.bodyDropped {
		st := kstatus.New(o.status, fmt.Sprintf("the request ran once, with code %d; its response was too large to keep for a retry", o.status))
		if o.status < 400 {
			st.Status, st.Reason = "Success", ""
		}
		header, body = st.Header(), st.Body()
	}
	if replayed {
		header.Set("X-Tether-Replayed", "true")
	}
	header.Del("Content-Length")
	rh := &tetherv1.Response{Status: uint32(o.status), Headers: tunnel.FromHTTP(header, nil)}
	if len(body) == 0 {
		rh.End = true
	} else if len(body) <= tunnel.MaxChunk && len(body) <= s.Credit() {
		rh.Body, rh.End = body, true
	}
	if !a.sendHead(s, log, rh) || rh.End {
		return
	}
	if _, err := s.WriteLast(ctx, body); err != nil && ctx.Err() == nil {
		log.Info("mutation response not delivered", "err", err)
	}
}

// streamResponse sends a response too large to keep: what was read, then
// the rest as it comes.
func (a *Agent) streamResponse(ctx context.Context, log *slog.Logger, s *tunnel.Stream, resp *http.Response, read []byte) {
	if s.Err() != nil {
		return
	}
	rh := &tetherv1.Response{Status: uint32(resp.StatusCode), Headers: tunnel.FromHTTP(resp.Header, nil)}
	if a.sendHead(s, log, rh) {
		a.sendRest(ctx, log, s, read, resp.Body, -1)
	}
}

// trackedBody tells whether a request body was read to its end: a call
// that failed before that never ran at the kube-apiserver, which reads a
// whole body before acting on it.
type trackedBody struct {
	r        io.ReadCloser
	complete bool
	eof      atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof.Store(true)
	}
	return n, err
}

func (b *trackedBody) Close() error { return b.r.Close() }

func (b *trackedBody) done() bool { return b.complete || b.eof.Load() }
