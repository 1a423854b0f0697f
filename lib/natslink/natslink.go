// Package natslink carries the frames of one request across NATS between a
// router and a subscriber: each message is one Frame, and its reply subject
// names where the sender listens for that request, so either side can always
// answer, even with a Reset for a request it has forgotten.
package natslink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/tunnel"
)

// ErrGone means the other side no longer has the request, or is gone.
var ErrGone = errors.New("natslink: peer no longer has the request")

// Seq numbers the frames one side of a request publishes and checks the
// numbers of those it receives (Frame.seq). Core NATS delivers at most once:
// a node that dies, a route that breaks or a slow consumer loses messages
// without telling either side, and a body with a chunk missing must never
// look whole. A gap is seen at the next frame; a loss at the very end is
// left to the probes and to the disconnect handlers.
type Seq struct {
	mu   sync.Mutex
	sent uint64
	recv uint64
}

// Publish numbers f and publishes it. Numbering and publishing happen
// under one lock, so frames leave in the order of their numbers.
func (q *Seq) Publish(nc *nats.Conn, subj, reply string, f *tetherv1.Frame, hdr nats.Header) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sent++
	f.Seq = q.sent
	return Publish(nc, subj, reply, f, hdr)
}

// Received checks f's number: true for the next frame in line, and for
// frames that carry none (pings, answers about unknown requests); false
// for a gap or a repeat, after which the request cannot be trusted.
func (q *Seq) Received(f *tetherv1.Frame) bool {
	if f.Seq == 0 {
		return true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if f.Seq != q.recv+1 {
		return false
	}
	q.recv = f.Seq
	return true
}

// Expect records that the peer's frames start after n: a subscriber took
// the router's Open as frame 1.
func (q *Seq) Expect(n uint64) {
	q.mu.Lock()
	q.recv = n
	q.mu.Unlock()
}

// ErrFramesLost is why a request is reset when its frames came with a gap.
const ErrFramesLost = "frames lost on NATS"

// Publish sends f to subj; reply is where the peer answers.
func Publish(nc *nats.Conn, subj, reply string, f *tetherv1.Frame, hdr nats.Header) error {
	b, err := tunnel.Encode(f)
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: subj, Reply: reply, Data: b, Header: hdr}
	if err := nc.PublishMsg(m); err != nil {
		return fmt.Errorf("publishing to %s: %w", subj, err)
	}
	return nil
}

// NoResponders reports whether m is the server's notice that nobody
// listened on the subject a message with a reply was published to.
func NoResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") == "503"
}

// Reset answers a message about a request the receiver does not know.
// Resets are never answered, so two sides can never bounce them. The code
// is UNAVAILABLE: this hop lost the request, and the sender may send it
// again where that is safe.
func Reset(nc *nats.Conn, m *nats.Msg, f *tetherv1.Frame, reply, why string) {
	if m.Reply == "" || f.GetReset_() != nil {
		return
	}
	_ = Publish(nc, m.Reply, reply, tunnel.ResetFrame(f.StreamId, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, why), nil)
}

// Refuse answers an Open that will not be served (malformed, wrong
// cluster, agent gone) so the router learns at once; the reply carries no
// session, so the router takes it as the request's whole answer.
func Refuse(nc *nats.Conn, m *nats.Msg, why string) {
	if m.Reply == "" {
		return
	}
	_ = Publish(nc, m.Reply, "", tunnel.ResetFrame(1, tetherv1.ResetCode_RESET_CODE_REFUSED, why), nil)
}

// AnswerPing replies to a liveness ping for a request: Pong if known.
func AnswerPing(nc *nats.Conn, m *nats.Msg, known bool) {
	if m.Reply == "" {
		return
	}
	f := &tetherv1.Frame{Kind: &tetherv1.Frame_Pong{Pong: &tetherv1.Pong{}}}
	if !known {
		f = tunnel.ResetFrame(1, tetherv1.ResetCode_RESET_CODE_CANCELED, "unknown request")
	}
	b, err := tunnel.Encode(f)
	if err == nil {
		_ = m.Respond(b)
	}
}

// Ping asks the side listening on subj whether it still has the request.
// It returns ErrGone when nobody listens or the peer forgot the request, and
// another error when the answer did not come in time (which proves nothing).
func Ping(ctx context.Context, nc *nats.Conn, subj string, timeout time.Duration) error {
	b, err := tunnel.Encode(&tetherv1.Frame{Kind: &tetherv1.Frame_Ping{Ping: &tetherv1.Ping{}}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, subj, b)
	if errors.Is(err, nats.ErrNoResponders) {
		return ErrGone
	}
	if err != nil {
		return fmt.Errorf("pinging %s: %w", subj, err)
	}
	f, err := tunnel.Decode(m.Data)
	if err != nil || f.GetPong() == nil {
		return ErrGone
	}
	return nil
}

// PingAll pings every subject at once, at most 32 in flight, so one peer
// that is slow to answer does not hold up the rest. errs[i] is for subjs[i].
func PingAll(ctx context.Context, nc *nats.Conn, subjs []string, timeout time.Duration) []error {
	errs := make([]error, len(subjs))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i, subj := range subjs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = Ping(ctx, nc, subj, timeout)
		}()
	}
	wg.Wait()
	return errs
}

// SessionProbe is the stream number of a session's own liveness: a Ping to
// tether.sess.<session>.0 is answered by the subscriber holding that agent
// stream, whichever requests it carries, so a router checks each session
// once instead of each request.
const SessionProbe = 0

// AckDelay is how long a subscriber waits for the agent's first answer
// before it tells the router it has the request (Ack): short requests never
// pay for the message, and a router can tell a slow request from a lost one.
const AckDelay = time.Second

// Ack tells the router at subj that the request is held at session subject
// reply, so it can probe it from now on.
func Ack(nc *nats.Conn, subj, reply string) error {
	return Publish(nc, subj, reply, &tetherv1.Frame{Kind: &tetherv1.Frame_Ping{Ping: &tetherv1.Ping{}}}, nil)
}

// IsAck reports whether a Ping is an Ack (its reply names a session) rather
// than a liveness question (its reply is a request inbox).
func IsAck(m *nats.Msg) bool {
	return subject.IsSession(m.Reply)
}
