package router

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/tunnel"
)

// call is one request on its way over NATS to whichever subscriber holds
// the cluster's agent. Its stream speaks to that subscriber's session
// subject, learned from the first answer.
type call struct {
	id    uint64
	inbox string
	nc    *nats.Conn
	s     *tunnel.Stream

	mu           sync.Mutex
	peer         string
	answered     chan struct{} // closed by the first answer
	isAnswered   bool
	noResponders bool

	lastRecv atomic.Int64
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
	return natslink.Publish(c.nc, peer, c.inbox, f, nil)
}

// receive takes a message from the inbox. It runs on the NATS delivery
// goroutine and never blocks.
func (c *call) receive(m *nats.Msg, f *tetherv1.Frame) {
	if !c.answer(m.Reply) {
		// Only the subscriber that took the request may speak for it.
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
		close(c.answered)
	}
	if c.peer != reply {
		return false
	}
	c.lastRecv.Store(time.Now().UnixNano())
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

// lost ends a call whose subscriber took the request and then went
// silent: whoever waits for the first answer (dial) or for the stream
// hears it at once.
func (c *call) lost(msg string) {
	c.mu.Lock()
	if !c.isAnswered {
		c.isAnswered = true
		close(c.answered)
	}
	c.mu.Unlock()
	c.s.Close(&tunnel.ResetError{Code: tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, Message: msg})
}

func (c *call) peerSubject() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer
}
