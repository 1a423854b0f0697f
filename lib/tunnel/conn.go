package tunnel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// Transport is a bidirectional frame stream: both ends of a Connect bidi
// stream satisfy it.
type Transport interface {
	Send(*tetherv1.Frame) error
	Receive() (*tetherv1.Frame, error)
}

// ErrPeerDead is returned by Conn.Run when the peer sent nothing, not even a
// Pong, for the keepalive timeout.
var ErrPeerDead = errors.New("tunnel: peer sent nothing within the keepalive timeout")

// Keepalive says how a Conn detects a dead peer.
type Keepalive struct {
	// Interval is how long the connection may be quiet before we ping.
	Interval time.Duration
	// Timeout is how long without any frame from the peer before it is dead.
	Timeout time.Duration
}

// DefaultKeepalive detects a dead peer within a minute. Every idle stream
// pings at this pace, and a subscriber holds thousands: at 5 s, 10,000
// idle agents cost two subscribers half a core and the simulator another
// (bench/results/capacity-steady.md as committed in 3d25e02), enough to saturate the
// machine under load. A peer that dies outright resets the connection at
// once; only a silent one (a partition, a frozen process) waits this out,
// and meanwhile the agent's other stream serves and routers probe their
// calls' streams within seconds.
var DefaultKeepalive = Keepalive{Interval: 20 * time.Second, Timeout: 60 * time.Second}

// Conn serializes sends on a Transport, answers pings and detects a dead
// peer. Frames for streams go to the handler, in order, on Run's goroutine.
type Conn struct {
	t         Transport
	keepalive Keepalive
	abort     func()

	sendMu   sync.Mutex
	closed   bool         // under sendMu
	lastRecv atomic.Int64 // unix nanos
	nonce    atomic.Uint64
}

// NewConn wraps t. abort must make a blocked t.Receive return (typically the
// cancel func of the stream's context); Run calls it when the peer is dead.
func NewConn(t Transport, keepalive Keepalive, abort func()) (*Conn, error) {
	if t == nil || abort == nil {
		return nil, errors.New("tunnel: NewConn needs a transport and an abort func")
	}
	if keepalive.Interval <= 0 || keepalive.Timeout <= keepalive.Interval {
		return nil, fmt.Errorf("tunnel: keepalive interval %v must be positive and below timeout %v", keepalive.Interval, keepalive.Timeout)
	}
	c := &Conn{t: t, keepalive: keepalive, abort: abort}
	c.lastRecv.Store(time.Now().UnixNano())
	return c, nil
}

// ErrClosed is returned by Send after Close.
var ErrClosed = errors.New("tunnel: connection closed")

// Send sends f; safe for concurrent use.
func (c *Conn) Send(f *tetherv1.Frame) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	return c.t.Send(f)
}

// Close makes every later Send fail: for a server handler that is about to
// return while other goroutines still hold the connection.
func (c *Conn) Close() {
	c.sendMu.Lock()
	c.closed = true
	c.sendMu.Unlock()
}

// Abort breaks the transport, as a dead peer would.
func (c *Conn) Abort() { c.abort() }

// Receive reads the next valid frame, recording that the peer is alive. The
// Hello/Welcome handshake uses it before Run.
func (c *Conn) Receive() (*tetherv1.Frame, error) {
	f, err := c.t.Receive()
	if err != nil {
		return nil, err
	}
	c.lastRecv.Store(time.Now().UnixNano())
	if err := Validate(f); err != nil {
		return nil, fmt.Errorf("invalid frame from peer: %w", err)
	}
	return f, nil
}

// Run reads frames until the transport fails, the peer breaks the protocol
// or goes quiet, or ctx ends. It answers Ping itself and passes every other
// frame to handle. handle must not block for long: it holds up every stream.
func (c *Conn) Run(ctx context.Context, handle func(*tetherv1.Frame) error) error {
	var dead, pinging, done atomic.Bool
	// The keepalive is a timer, not a goroutine: an idle connection costs
	// none (thousands are held per process). A ping goes out on a
	// goroutine of its own: a Send blocked behind a full window to a dead
	// peer must not stop the timer from declaring it dead.
	var t *time.Timer
	t = time.AfterFunc(time.Duration(math.MaxInt64), func() {
		if done.Load() {
			return
		}
		quiet := time.Since(time.Unix(0, c.lastRecv.Load()))
		if quiet >= c.keepalive.Timeout {
			dead.Store(true)
			c.abort()
			return
		}
		if quiet >= c.keepalive.Interval && pinging.CompareAndSwap(false, true) {
			go func() {
				defer pinging.Store(false)
				// A failed send shows up as a failed Receive soon enough.
				_ = c.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Ping{Ping: &tetherv1.Ping{Nonce: c.nonce.Add(1)}}})
			}()
		}
		t.Reset(c.keepalive.Interval / 2)
	})
	// Armed only now that t is set, which the callback reads.
	t.Reset(c.keepalive.Interval / 2)
	stopAbort := context.AfterFunc(ctx, c.abort)
	defer func() {
		done.Store(true)
		t.Stop()
		stopAbort()
		// Returning ends the stream, as the goroutine's cancel did.
		c.abort()
	}()
	for {
		f, err := c.t.Receive()
		if err != nil {
			if dead.Load() {
				return ErrPeerDead
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		c.lastRecv.Store(time.Now().UnixNano())
		if verr := Validate(f); verr != nil {
			if f.StreamId == 0 {
				return fmt.Errorf("invalid frame from peer: %w", verr)
			}
			// One stream broke the protocol: end it on both sides, and keep
			// the connection the other streams share.
			reset := func() *tetherv1.Frame {
				return &tetherv1.Frame{StreamId: f.StreamId, Kind: &tetherv1.Frame_Reset_{Reset_: &tetherv1.Reset{
					Code: tetherv1.ResetCode_RESET_CODE_PROTOCOL, Message: "invalid frame: " + verr.Error(),
				}}}
			}
			if err := c.Send(reset()); err != nil {
				return err
			}
			if err := handle(reset()); err != nil {
				return err
			}
			continue
		}
		switch k := f.Kind.(type) {
		case *tetherv1.Frame_Ping:
			if err := c.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Pong{Pong: &tetherv1.Pong{Nonce: k.Ping.Nonce}}}); err != nil {
				return fmt.Errorf("answering ping: %w", err)
			}
		case *tetherv1.Frame_Pong:
		case *tetherv1.Frame_Hello, *tetherv1.Frame_Welcome:
			return fmt.Errorf("unexpected %T after the handshake", f.Kind)
		default:
			if err := handle(f); err != nil {
				return err
			}
		}
	}
}
