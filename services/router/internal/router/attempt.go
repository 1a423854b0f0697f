package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/tunnel"
)

// kind is what may be done again with a request that lost a hop.
type kind int

const (
	// read: GET, HEAD or OPTIONS, watches included: before its head, a
	// read changed nothing and can go out again; a watch, after its head,
	// resumes from the last event it delivered (watch.go).
	read kind = iota
	// mutation: POST, PUT, PATCH, DELETE. It goes out again with the same
	// request id and the agent streams earlier attempts reached; the agent
	// answers a mutation it remembers with its first result and never
	// runs one twice (ADR 006).
	mutation
	// upgrade: exec, attach, port-forward. Only a refusal (nothing ran)
	// is sent again: a command may have started before the 101 was lost.
	upgrade
)

func kindOf(open *tetherv1.Open) kind {
	switch {
	case open.Upgrade != "":
		return upgrade
	case tunnel.Mutates(open):
		return mutation
	}
	return read
}

// isWatch: a request whose response streams for as long as the client
// keeps it (a watch, logs -f).
func isWatch(open *tetherv1.Open) bool {
	q, _ := url.ParseQuery(open.Query)
	return tunnel.Streams(q, open.Path)
}

// request is one client request across its attempts.
type request struct {
	open  *tetherv1.Open
	kind  kind
	start time.Time
	// body is the request body, kept for another attempt while it fits;
	// nil without one.
	body *replayBody
	// uncertain: an earlier attempt may have reached an agent without the
	// router learning which; a mutation then never goes out again.
	uncertain bool
}

// exchange sends the request until an attempt answers with a head, or
// fails in a way that may not be tried again. On error c, if not nil, is
// the failed attempt, whose error is err.
func (s *Server) exchange(ctx context.Context, r *request) (*call, *tetherv1.Frame, error) {
	delay := 25 * time.Millisecond
	for {
		// A new request waits NoAgentWait for an agent; one sent again
		// was in flight when its hop went, and its agent is most likely
		// reconnecting: it waits out the retry window.
		deadline := time.Now().Add(s.cfg.NoAgentWait)
		if r.open.Attempt > 0 {
			deadline = r.start.Add(s.cfg.RetryWindow)
		}
		c, err := s.dial(ctx, r.open, deadline)
		if err != nil {
			return nil, nil, err
		}
		if r.body != nil {
			go s.pumpBody(ctx, r.body, c)
		}
		head, err := c.s.Head(ctx)
		if err == nil {
			return c, head, nil
		}
		if ctx.Err() != nil || !s.again(r, c, err) {
			return c, nil, err
		}
		s.letGo(r, c, "the router sends the request again")
		s.metrics.retries.Inc()
		s.log.Info("sending a request again", "request_id", r.open.RequestId, "cluster_id", r.open.ClusterId, "attempt", r.open.Attempt, "err", err,
			"nats_server", s.cfg.NATS.ConnectedServerName())
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 400*time.Millisecond)
	}
}

// letGo ends attempt c of r before the next: the subscriber, if it is
// there, stops its part; the agent lets a mutation finish and keeps its
// result, and the next attempt of a mutation names the agent stream c
// reached, so that an agent runs it only if it held every stream named.
func (s *Server) letGo(r *request, c *call, why string) {
	if sess := c.session(); r.kind == mutation && sess != "" && !slices.Contains(r.open.PreviousSessions, sess) {
		r.open.PreviousSessions = append(r.open.PreviousSessions, sess)
	}
	c.abandon(tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, why)
	s.forget(c)
	r.open.Attempt++
}

// again reports whether a request whose attempt c failed with err before
// its head should go out once more.
func (s *Server) again(r *request, c *call, err error) bool {
	if r.body != nil && !r.body.replayable() {
		return false
	}
	switch tunnel.CodeOf(err) {
	case tetherv1.ResetCode_RESET_CODE_REFUSED:
		// Nothing ran: an agent that is draining, a subscriber that lost
		// it. A new request is given up as one with no agent would be; one
		// sent again has the retry window.
		if r.open.Attempt == 0 {
			return time.Since(r.start) < s.cfg.NoAgentWait
		}
		return time.Since(r.start) < s.cfg.RetryWindow
	case tetherv1.ResetCode_RESET_CODE_UNAVAILABLE:
		if time.Since(r.start) >= s.cfg.RetryWindow {
			return false
		}
		switch r.kind {
		case read:
			return true
		case mutation:
			if c.session() == "" && c.epoch != s.epoch.Load() {
				// The link dropped before any subscriber answered: one
				// may have relayed it, and the router cannot name the
				// agent stream it reached.
				r.uncertain = true
			}
			// An Open names at most MaxIDs streams; a mutation that
			// reached more is not sent again rather than name fewer.
			return !r.uncertain && len(r.open.PreviousSessions) < tunnel.MaxIDs
		}
	}
	return false
}

// dial publishes the Open until a subscriber takes it, waiting until
// deadline for an agent that is reconnecting and for the router's own NATS
// link. Nobody listening is the one failure that is always safe to retry:
// nothing reached an agent.
func (s *Server) dial(ctx context.Context, open *tetherv1.Open, deadline time.Time) (*call, error) {
	subj, err := subject.Requests(open.ClusterId)
	if err != nil {
		return nil, err
	}
	open.Window = uint32(s.cfg.Window)
	frame := &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: open}}
	hdr := nats.Header{}
	s.cfg.Propagator.Inject(ctx, propagation.HeaderCarrier(hdr))
	delay := 25 * time.Millisecond
	for {
		if s.cfg.NATS.IsConnected() {
			c := s.newCall()
			c.s.HeadSent(frame)
			if err := c.seq.Publish(s.cfg.NATS, subj, c.inbox, frame, hdr); err != nil {
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
		}
		if time.Now().Add(delay).After(deadline) {
			if !s.cfg.NATS.IsConnected() {
				return nil, errors.New("the router has lost its NATS connection")
			}
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

// pumpBody streams the request body to one attempt, waiting for the
// agent's credit.
func (s *Server) pumpBody(ctx context.Context, b *replayBody, c *call) {
	rd, err := b.reader()
	if err != nil {
		c.s.Reset(tetherv1.ResetCode_RESET_CODE_CANCELED, err.Error())
		return
	}
	for {
		chunk, err := rd.next(ctx, c.s.Done())
		if errors.Is(err, io.EOF) {
			_ = c.s.CloseWrite()
			return
		}
		if err != nil {
			if errors.Is(err, errBodyBroken) {
				c.s.Reset(tetherv1.ResetCode_RESET_CODE_CANCELED, "client request broken off")
			}
			return
		}
		if _, err := c.s.WriteContext(ctx, chunk); err != nil {
			return
		}
	}
}

// pumpUpgrade streams an upgraded connection's bytes from the gateway to
// the agent: nothing of it is kept, since an upgrade is never sent again.
func pumpUpgrade(ctx context.Context, gw receiver, c *call) {
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

var (
	errBodyBroken    = errors.New("router: the client's request body broke off")
	errNotReplayable = errors.New("router: the request body was too large to keep for another attempt")
)

// replayBody is a request body as it arrives from the gateway, kept while
// it fits in limit so another attempt can send it again from the start.
// Past the limit it is only streamed, to the attempt reading it then.
type replayBody struct {
	limit int

	mu      sync.Mutex
	changed chan struct{}
	chunks  [][]byte
	base    int // chunks dropped from the front, once not replayable
	size    int
	keep    bool // still replayable
	end     bool
	err     error // errBodyBroken, or the gateway's error
	readers int
}

func newReplayBody(limit int) *replayBody {
	return &replayBody{limit: limit, keep: true, changed: make(chan struct{})}
}

// fill reads the body from the gateway until its end; it runs on its own
// goroutine for as long as the request.
func (b *replayBody) fill(gw receiver) {
	for {
		f, err := gw.Receive()
		if err != nil {
			b.finish(errBodyBroken)
			return
		}
		switch k := f.Kind.(type) {
		case *tetherv1.Frame_Data:
			b.add(k.Data.Chunk, k.Data.End)
			if k.Data.End {
				return
			}
		case *tetherv1.Frame_Reset_:
			b.finish(errBodyBroken)
			return
		}
	}
}

func (b *replayBody) add(chunk []byte, end bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(chunk) > 0 {
		b.chunks = append(b.chunks, chunk)
		b.size += len(chunk)
		if b.size > b.limit {
			b.keep = false
		}
	}
	b.end = b.end || end
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *replayBody) finish(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.end && b.err == nil {
		b.err = err
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// replayable reports whether another attempt can send the whole body.
func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.keep && b.err == nil
}

// reader starts reading the body from its first byte.
func (b *replayBody) reader() (*bodyReader, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.readers > 0 && !b.keep {
		return nil, errNotReplayable
	}
	b.readers++
	return &bodyReader{b: b}, nil
}

type bodyReader struct {
	b   *replayBody
	pos int // index of the next chunk, counting dropped ones
}

// next returns the next chunk, waiting for it; io.EOF after the last.
func (r *bodyReader) next(ctx context.Context, stop <-chan struct{}) ([]byte, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if r.pos < b.base {
			return nil, errNotReplayable
		}
		if i := r.pos - b.base; i < len(b.chunks) {
			chunk := b.chunks[i]
			r.pos++
			if !b.keep {
				// Streamed only: what this reader took is not needed again.
				clear(b.chunks[:i+1])
				b.chunks = b.chunks[i+1:]
				b.base = r.pos
			}
			return chunk, nil
		}
		if b.end {
			return nil, io.EOF
		}
		if b.err != nil {
			return nil, b.err
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			b.mu.Lock()
			return nil, ctx.Err()
		case <-stop:
			b.mu.Lock()
			return nil, errors.New("router: the attempt ended")
		}
		b.mu.Lock()
	}
}
