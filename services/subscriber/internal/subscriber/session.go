package subscriber

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/lib/agentcred"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/tunnel"
)

// session is one agent's stream and the requests relayed over it.
type session struct {
	srv     *Server
	id      string
	cluster string
	conn    *tunnel.Conn
	log     *slog.Logger
	// hello is closed once the agent was told it is connected (Welcome),
	// before which no request may go to it (it waits for the Welcome).
	hello chan struct{}
	// announced is what the registry hears of the agent when the stream
	// connects, and again when it is announced under a new incarnation.
	announced *tetherv1.AgentConnected
	// moved is closed when the agent says it has a stream elsewhere (its
	// GoAway); done when the session is closed.
	moved     chan struct{}
	movedOnce sync.Once
	done      chan struct{}

	mu sync.Mutex
	// claims are of the latest credential the agent presented; expiry
	// closes the stream when it passes without a renewal.
	claims  agentcred.Claims
	expiry  *time.Timer
	relays  map[uint64]*relay
	nextID  uint64
	data    *nats.Subscription // the session's own frames, while it relays
	closing bool
	// lastOpen is when the session last took a request.
	lastOpen time.Time
	// probe runs probeIdle while the session relays requests; an idle
	// stream has none (ADR 015).
	probe *time.Timer
}

func newSession(srv *Server, conn *tunnel.Conn, hello *tetherv1.Hello, claims agentcred.Claims) *session {
	id := subject.NewSession(srv.process)
	s := &session{
		srv: srv, id: id, cluster: hello.ClusterId, conn: conn, claims: claims,
		log:    srv.log.With("cluster_id", hello.ClusterId, "session_id", id),
		relays: map[uint64]*relay{}, nextID: 1,
		moved: make(chan struct{}), done: make(chan struct{}), hello: make(chan struct{}),
		announced: &tetherv1.AgentConnected{AgentVersion: hello.AgentVersion, KubernetesVersion: hello.KubernetesVersion},
	}
	s.expiry = time.AfterFunc(claims.Expires.Sub(srv.cfg.Now()), s.expired)
	return s
}

// welcomed reports whether the agent was told it is connected.
func (s *session) welcomed() bool { return isClosed(s.hello) }

func (s *session) uid() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims.ClusterUID
}

// expired closes a stream whose credential ran out without a renewal.
func (s *session) expired() {
	s.srv.metrics.refused.WithLabelValues("expired").Inc()
	s.log.Warn("agent credential expired without renewal: closing the stream")
	s.close("agent credential expired")
	s.conn.Abort()
}

// handle takes every frame from the agent: its renewed credentials, and
// the frames of requests.
func (s *session) handle(f *tetherv1.Frame) error {
	if c := f.GetCredential(); c != nil {
		return s.renew(c.GetToken())
	}
	if f.GetGoAway() != nil {
		s.agentMoved()
		return nil
	}
	return s.fromAgent(f)
}

// agentMoved: the agent has another stream now, so new requests go there
// (the subscription's drain lets NATS deliver them to the other
// subscriber); those in flight here finish.
func (s *session) agentMoved() {
	s.movedOnce.Do(func() {
		s.log.Info("agent moved to another stream; finishing the requests in flight here")
		s.stopListening()
		close(s.moved)
		go s.closeWhenIdle()
	})
}

// closeWhenIdle ends a session that takes no new requests once those in
// flight are done, or MoveTimeout has passed: a watch would keep it for
// ever, and a router resumes it on the agent's other stream (the reset is
// UNAVAILABLE). The agent waits for that.
func (s *session) closeWhenIdle() {
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.MoveTimeout)
	defer cancel()
	err := waitFor(ctx, func() bool { return s.closed() || s.len() == 0 })
	if s.closed() {
		return
	}
	if err != nil {
		s.log.Info("closing the stream the agent left, with requests still open", "in_flight", s.len())
	}
	s.close("the agent moved to another stream")
	s.conn.Abort()
}

// closed reports whether the session was closed.
func (s *session) closed() bool { return isClosed(s.done) }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// renew takes a fresh credential on the open stream. One that does not
// check out, or names another cluster, ends the stream: the agent is
// either broken or not who it said.
func (s *session) renew(token string) error {
	c, err := s.srv.cfg.Credentials.Verify(token, s.srv.cfg.Now())
	if err != nil {
		s.srv.metrics.refused.WithLabelValues("invalid_credential").Inc()
		return fmt.Errorf("renewed credential refused: %w", err)
	}
	s.mu.Lock()
	same := c.ClusterID == s.claims.ClusterID && c.ClusterUID == s.claims.ClusterUID
	if same {
		s.claims = c
		s.expiry.Reset(c.Expires.Sub(s.srv.cfg.Now()))
	}
	s.mu.Unlock()
	if !same {
		s.srv.metrics.refused.WithLabelValues("wrong_cluster").Inc()
		return fmt.Errorf("renewed credential is for cluster %q, not %q", c.ClusterID, s.cluster)
	}
	s.log.Info("agent credential renewed", "credential_id", c.ID, "expires", c.Expires)
	return nil
}

// listen takes the cluster's requests (listeners.join, which flushes, so
// routers see the interest before the agent is told it is connected). The
// session's own frames are subscribed to with its first request.
func (s *session) listen() error {
	return s.srv.listeners.join(s)
}

// subscribe makes sure the session's frames are subscribed to, before
// anything of a request goes to its router (which then knows where to
// send them): NATS takes a connection's SUB before its later PUBs. Called
// with s.mu held. An idle session drops the subscription (probeIdle), so
// it costs no goroutine.
func (s *session) subscribe() error {
	s.lastOpen = time.Now()
	if s.data != nil {
		return nil
	}
	data, err := s.srv.cfg.NATS.Subscribe(subject.SessionWildcard(s.id), s.fromRouter)
	if err != nil {
		return fmt.Errorf("subscribing to session frames: %w", err)
	}
	// The routers' windows bound what a request may have in flight; this
	// bounds the whole session's backlog whatever they do.
	_ = data.SetPendingLimits(64<<10, 256<<20)
	s.data = data
	return nil
}

// stopListening takes no new requests; frames of open ones still flow.
func (s *session) stopListening() {
	s.srv.listeners.leave(s)
}

// close ends the session: routers of open requests hear why at once.
func (s *session) close(why string) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	close(s.done)
	s.expiry.Stop()
	if s.probe != nil {
		s.probe.Stop()
		s.probe = nil
	}
	data := s.data
	s.data = nil
	s.mu.Unlock()
	s.srv.listeners.leave(s)
	if data != nil {
		_ = data.Unsubscribe()
	}
	s.endRelays(why)
}

func (s *session) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.relays)
}
