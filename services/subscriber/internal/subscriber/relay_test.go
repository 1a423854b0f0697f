package subscriber

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tether-dev/tether/lib/agentcred"
	"github.com/tether-dev/tether/lib/clusters"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
)

func data(end bool) *tetherv1.Frame {
	return &tetherv1.Frame{Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: []byte("x"), End: end}}}
}

func response(end bool) *tetherv1.Frame {
	return &tetherv1.Frame{Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, End: end}}}
}

// Each half ends once; the request ends with the second half's end, or at
// once with a Reset from either side, and never twice.
func TestRelaySteps(t *testing.T) {
	type step struct {
		from side
		f    *tetherv1.Frame
		done bool
	}
	reset := tunnel.ResetFrame(1, tetherv1.ResetCode_RESET_CODE_CANCELED, "")
	for _, tc := range []struct {
		name  string
		whole bool // the Open had end set: the request is whole
		steps []step
		state relayState
	}{
		{"a read: whole request, answer in one frame", true, []step{{fromAgent, response(true), true}}, relaySent},
		{"a read answered in parts", true, []step{{fromAgent, response(false), false}, {fromAgent, data(false), false}, {fromAgent, data(true), true}}, relaySent},
		{"a body, then the answer", false, []step{{fromRouter, data(false), false}, {fromRouter, data(true), false}, {fromAgent, response(true), true}}, relaySent},
		{"answered before the body ended", false, []step{{fromAgent, response(true), false}, {fromRouter, data(true), true}}, relayAnswered},
		{"an upgrade: each side half-closes", false, []step{{fromAgent, response(false), false}, {fromRouter, data(true), false}, {fromAgent, data(false), false}, {fromAgent, data(true), true}}, relaySent},
		{"the router resets", false, []step{{fromRouter, data(false), false}, {fromRouter, reset, true}}, relayOpen},
		{"the agent resets", true, []step{{fromAgent, response(false), false}, {fromAgent, reset, true}}, relaySent},
		{"a router's Response is not an end", false, []step{{fromRouter, response(true), false}}, relayOpen},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &relay{}
			if tc.whole {
				r.state = relaySent
			}
			for i, st := range tc.steps {
				if got := r.step(st.from, st.f); got != st.done {
					t.Fatalf("step %d (%T): done %v, want %v", i, st.f.Kind, got, st.done)
				}
			}
			if r.state != tc.state {
				t.Fatalf("state %s, want %s", r.state, tc.state)
			}
		})
	}
}

// fakeAgent is the agent's end of the stream: it records what the
// subscriber sends. Nothing reads from it: the test plays the agent by
// calling session.handle.
type fakeAgent struct {
	frames chan *tetherv1.Frame
	mu     sync.Mutex
	broken bool
}

func (a *fakeAgent) Send(f *tetherv1.Frame) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.broken {
		return errors.New("stream broke")
	}
	a.frames <- f
	return nil
}

func (a *fakeAgent) Receive() (*tetherv1.Frame, error) { select {} }

func (a *fakeAgent) next(t *testing.T) *tetherv1.Frame {
	t.Helper()
	select {
	case f := <-a.frames:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("the agent got nothing")
		return nil
	}
}

type noClusters struct{}

func (noClusters) Get(string) (clusters.Cluster, bool) { return clusters.Cluster{}, false }
func (noClusters) Sync(context.Context) error          { return nil }

// relayHarness is a subscriber with one welcomed agent stream on a real
// NATS server, and a router's inbox on it.
type relayHarness struct {
	t      *testing.T
	nc     *nats.Conn
	srv    *Server
	sess   *session
	agent  *fakeAgent
	inbox  chan *nats.Msg
	router string
	seq    uint64 // the router's frames, numbered
}

func newRelayHarness(t *testing.T) *relayHarness {
	t.Helper()
	nc := startNATS(t)
	pub, _, _ := ed25519.GenerateKey(nil)
	creds, err := agentcred.NewVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{ID: "sub-0", NATS: nc, Credentials: creds, Clusters: noClusters{}, Events: &fakeEvents{},
		Instruments: telemetry.Instruments{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
			Tracer: noop.NewTracerProvider().Tracer(""), Propagator: propagation.TraceContext{}}})
	if err != nil {
		t.Fatal(err)
	}
	agent := &fakeAgent{frames: make(chan *tetherv1.Frame, 16)}
	conn, err := tunnel.NewConn(agent, tunnel.DefaultKeepalive, func() {})
	if err != nil {
		t.Fatal(err)
	}
	sess := newSession(srv, conn, &tetherv1.Hello{ClusterId: "dev"}, agentcred.Claims{ClusterID: "dev", Expires: time.Now().Add(time.Hour)})
	t.Cleanup(func() { sess.close("test over") })
	if err := sess.listen(); err != nil {
		t.Fatal(err)
	}
	close(sess.hello)
	h := &relayHarness{t: t, nc: nc, srv: srv, sess: sess, agent: agent, inbox: make(chan *nats.Msg, 16), router: nats.NewInbox()}
	sub, err := nc.ChanSubscribe(h.router, h.inbox)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return h
}

// open sends a request as a router does, and returns the stream it has at
// the agent.
func (h *relayHarness) open(method string, end bool) uint64 {
	h.t.Helper()
	subj, _ := subject.Requests("dev")
	h.seq = 1
	b, err := tunnel.Encode(&tetherv1.Frame{StreamId: 1, Seq: 1, Kind: &tetherv1.Frame_Open{Open: &tetherv1.Open{
		RequestId: "r1", ClusterId: "dev", Method: method, Path: "/api/v1/namespaces/default/configmaps", End: end, Trace: map[string]string{},
	}}})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.nc.PublishMsg(&nats.Msg{Subject: subj, Reply: h.router, Data: b}); err != nil {
		h.t.Fatal(err)
	}
	f := h.agent.next(h.t)
	if f.GetOpen() == nil || f.StreamId == 0 {
		h.t.Fatalf("the agent got %v, want an Open", f)
	}
	return f.StreamId
}

// fromRouter sends frame f of stream id as the router, numbered as it
// numbers them unless seq says otherwise.
func (h *relayHarness) fromRouter(id uint64, f *tetherv1.Frame) {
	h.t.Helper()
	h.seq++
	f.StreamId, f.Seq = 1, h.seq
	b, err := tunnel.Encode(f)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.nc.PublishMsg(&nats.Msg{Subject: subject.Session(h.sess.id, id), Reply: h.router, Data: b}); err != nil {
		h.t.Fatal(err)
	}
}

// atRouter is the next frame the router gets; acks are skipped.
func (h *relayHarness) atRouter() *tetherv1.Frame {
	h.t.Helper()
	for {
		select {
		case m := <-h.inbox:
			f, err := tunnel.Decode(m.Data)
			if err != nil {
				h.t.Fatal(err)
			}
			if f.GetPing() != nil {
				continue // an ack
			}
			return f
		case <-time.After(5 * time.Second):
			h.t.Fatal("the router got nothing")
			return nil
		}
	}
}

// ended waits until the session holds no request, and checks that it
// ended once with outcome.
func (h *relayHarness) ended(outcome string) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.sess.len() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	m := h.srv.metrics
	if n := h.sess.len(); n != 0 {
		h.t.Fatalf("%d requests still held", n)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues(outcome)); got != 1 {
		h.t.Fatalf("%v requests ended %s, want 1", got, outcome)
	}
	if got := testutil.ToFloat64(m.inflight); got != 0 {
		h.t.Fatalf("%v requests in flight, want 0", got)
	}
}

// The relay's life at the subscriber, end to end between a router on NATS
// and the agent's stream: every way a request ends leaves nothing held and
// counts one outcome, and the sides that did not end it hear why.
func TestRelayLifecycle(t *testing.T) {
	t.Run("a read answered whole", func(t *testing.T) {
		h := newRelayHarness(t)
		id := h.open("GET", true)
		if err := h.sess.handle(&tetherv1.Frame{StreamId: id, Kind: response(true).Kind}); err != nil {
			t.Fatal(err)
		}
		if f := h.atRouter(); f.GetResponse() == nil || f.Seq != 1 {
			t.Fatalf("router got %v, want the response numbered 1", f)
		}
		h.ended("ok")
	})
	t.Run("a body, answered", func(t *testing.T) {
		h := newRelayHarness(t)
		id := h.open("POST", false)
		h.fromRouter(id, data(true))
		if f := h.agent.next(t); f.GetData() == nil || f.StreamId != id || f.Seq != 0 {
			t.Fatalf("agent got %v, want the body's end on stream %d, unnumbered", f, id)
		}
		if h.sess.len() != 1 {
			t.Fatal("the request ended before its answer")
		}
		if err := h.sess.handle(&tetherv1.Frame{StreamId: id, Kind: response(true).Kind}); err != nil {
			t.Fatal(err)
		}
		if f := h.atRouter(); f.GetResponse() == nil {
			t.Fatalf("router got %v", f)
		}
		h.ended("ok")
	})
	t.Run("the agent resets", func(t *testing.T) {
		h := newRelayHarness(t)
		id := h.open("GET", true)
		_ = h.sess.handle(tunnel.ResetFrame(id, tetherv1.ResetCode_RESET_CODE_INTERNAL, "boom"))
		if f := h.atRouter(); f.GetReset_().GetCode() != tetherv1.ResetCode_RESET_CODE_INTERNAL {
			t.Fatalf("router got %v", f)
		}
		h.ended("RESET_CODE_INTERNAL")
	})
	t.Run("a frame from the router lost", func(t *testing.T) {
		h := newRelayHarness(t)
		id := h.open("POST", false)
		h.seq++ // as if frame 2 never came
		h.fromRouter(id, data(false))
		if f := h.agent.next(t); f.GetReset_() == nil {
			t.Fatalf("agent got %v, want a Reset", f)
		}
		if f := h.atRouter(); f.GetReset_().GetMessage() == "" {
			t.Fatalf("router got %v, want a Reset", f)
		}
		h.ended("frames_lost")
	})
	t.Run("the agent's stream closes", func(t *testing.T) {
		h := newRelayHarness(t)
		h.open("GET", true)
		h.sess.close("agent of cluster dev disconnected")
		if f := h.atRouter(); f.GetReset_().GetCode() != tetherv1.ResetCode_RESET_CODE_UNAVAILABLE {
			t.Fatalf("router got %v", f)
		}
		h.ended("agent_lost")
	})
	t.Run("the agent's stream broke under a frame", func(t *testing.T) {
		h := newRelayHarness(t)
		id := h.open("POST", false)
		h.agent.mu.Lock()
		h.agent.broken = true
		h.agent.mu.Unlock()
		h.fromRouter(id, data(false))
		if f := h.atRouter(); f.GetReset_().GetCode() != tetherv1.ResetCode_RESET_CODE_UNAVAILABLE {
			t.Fatalf("router got %v", f)
		}
		h.ended("agent_lost")
	})
	t.Run("NATS lost, then back", func(t *testing.T) {
		h := newRelayHarness(t)
		id := h.open("GET", true)
		dropped := h.sess.dropRelays("subscriber lost its NATS connection")
		if f := h.agent.next(t); f.GetReset_() == nil || f.StreamId != id {
			t.Fatalf("agent got %v, want a Reset", f)
		}
		h.ended("nats_lost")
		for _, r := range dropped {
			r.tellRouter("back")
		}
		if f := h.atRouter(); f.GetReset_() == nil {
			t.Fatalf("router got %v", f)
		}
	})
	t.Run("everything at once ends it once", func(t *testing.T) {
		h := newRelayHarness(t)
		id := h.open("GET", true)
		r := h.sess.relay(id)
		var wg sync.WaitGroup
		var won sync.Map
		for i, end := range []func() bool{
			func() bool { return r.end("ok") },
			func() bool { return r.fail("agent_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "x", false, true) },
			func() bool { return r.fail("router_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "x", true, false) },
			func() bool { return r.fail("frames_lost", tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, "x", true, true) },
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if end() {
					won.Store(i, true)
				}
			}()
		}
		wg.Wait()
		n := 0
		won.Range(func(any, any) bool { n++; return true })
		if n != 1 {
			t.Fatalf("%d calls ended the request, want 1", n)
		}
		if h.sess.len() != 0 || testutil.ToFloat64(h.srv.metrics.inflight) != 0 {
			t.Fatal("the request is still held")
		}
	})
}
