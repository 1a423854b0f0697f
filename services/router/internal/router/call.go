package router

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/tunnel"
)

// call is one attempt of a request on its way over NATS to whichever
// subscriber holds the cluster's agent. Its stream speaks to that
// subscriber's session subject, learned from the first answer.
type call struct {
	id    uint64
	inbox string
	nc    *nats.Conn
	s     *tunnel.Stream
	seq   natslink.Seq
	// epoch is the router's NATS epoch when the call was sent: a call whose
	// link dropped before any answer may have reached an agent unseen.
	epoch uint64
	sent  time.Time

	mu   sync.Mutex
	peer string
	// sess is the agent stream (session) peer names, and probe what the
	// peer probe pings for it (ADR 016).
	sess, probe  string
	answered     chan struct{} // closed by the first answer
	isAnswered   bool
	noResponders bool

	// lastRecv: the last frame from the peer; lastChecked: the last time a
	// probe found the peer holding the call (or its session alive).
	lastRecv    atomic.Int64
	lastChecked atomic.Int64
}

var errNoPeer = errors.New("router: no subscriber has answered yet")

// Send implements tunnel.Sender toward the subscriber.
func (c *call) Send(f *tetherv1.Frame) error {
	c.mu.Lock()
	peer := c.peer
	c.mu.Unlock()
	if peer == "" {
		return errNoPeer
	}
	return c.seq.Publish(c.nc, peer, c.inbox, f, nil)
}

// receive takes a message from the inbox. It runs on the NATS delivery
// goroutine and never blocks.
func (c *call) receive(m *nats.Msg, f *tetherv1.Frame) {
	if !c.answer(m.Reply) {
		// Only the subscriber that took the request may speak for it.
		return
	}
	if !c.seq.Received(f) {
		// What came after a lost frame cannot be used: the request is
		// broken off here (and at the agent), and sent again if it may be.
		c.s.Reset(tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, natslink.ErrFramesLost)
		return
	}
	_ = c.s.Deliver(f)
}

// answer records a message from reply: the first names the peer (a
// refusal, with no reply, names none). It reports whether reply is the peer.
func (c *call) answer(reply string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.isAnswered {
		c.isAnswered = true
		c.peer = reply
		// Parsed once here, not at every probe of a watch that lasts hours.
		if sess, ok := subject.SessionOf(reply); ok {
			c.sess, c.probe = sess, sess
			if p, ok := subject.ProcessOf(sess); ok {
				c.probe = p
			}
		}
		close(c.answered)
	}
	if c.peer != reply {
		return false
	}
	now := time.Now().UnixNano()
	c.lastRecv.Store(now)
	c.lastChecked.Store(now)
	return true
}

// noResponder handles NATS' notice that nobody listened: before an answer,
// no subscriber holds the agent; after, the subscriber we spoke to is gone.
func (c *call) noResponder() {
	c.mu.Lock()
	if !c.isAnswered {
		c.isAnswered = true
		c.noResponders = true
		close(c.answered)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.s.Close(&tunnel.ResetError{Code: tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, Message: "the subscriber holding the agent is gone"})
}

// lost ends a call whose subscriber (or the link to it) is gone: whoever
// waits for the first answer (dial) or for the stream hears it at once.
func (c *call) lost(msg string) {
	c.mu.Lock()
	if !c.isAnswered {
		c.isAnswered = true
		close(c.answered)
	}
	c.mu.Unlock()
	c.s.Close(&tunnel.ResetError{Code: tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, Message: msg})
}

// abandon tells the subscriber that took the call, if any, that the
// router is done with it: unless it finished cleanly or the subscriber
// ended it itself. A stream that failed here (a lost peer, a lost link)
// is told too, so the agent stops a watch the router resumed elsewhere.
func (c *call) abandon(code tetherv1.ResetCode, msg string) {
	if c.s.Finished() {
		return
	}
	err := c.s.Err()
	if err == nil {
		c.s.Reset(code, msg)
		return
	}
	var re *tunnel.ResetError
	if errors.As(err, &re) && re.Remote {
		return
	}
	_ = c.Send(tunnel.ResetFrame(1, code, msg))
}

func (c *call) peerSubject() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer
}

// session is the agent stream the call reached, if a subscriber said.
func (c *call) session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

// probeTarget is what the peer probe pings for this call: the subscriber
// process holding its agent stream, or the stream itself for a subscriber
// older than ADR 016; empty until a subscriber said.
func (c *call) probeTarget() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.probe
}
