package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// Sender sends one frame toward the peer of a stream. Implementations must be
// safe for concurrent use and must not keep f after returning.
type Sender interface {
	Send(f *tetherv1.Frame) error
}

// SenderFunc adapts a function to Sender.
type SenderFunc func(f *tetherv1.Frame) error

// Send calls fn(f).
func (fn SenderFunc) Send(f *tetherv1.Frame) error { return fn(f) }

// ResetError is how a stream reports that it was reset, by the peer or
// locally.
type ResetError struct {
	Code    tetherv1.ResetCode
	Message string
	// Remote is true when the peer sent the reset.
	Remote bool
}

func (e *ResetError) Error() string {
	side := "local"
	if e.Remote {
		side = "remote"
	}
	return fmt.Sprintf("stream reset (%s, %s): %s", side, e.Code, e.Message)
}

// CodeOf returns the reset code carried by err, or RESET_CODE_INTERNAL.
func CodeOf(err error) tetherv1.ResetCode {
	var re *ResetError
	if errors.As(err, &re) {
		return re.Code
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return tetherv1.ResetCode_RESET_CODE_CANCELED
	}
	return tetherv1.ResetCode_RESET_CODE_INTERNAL
}

// Stream is one end of one request: a byte stream each way with its own
// credit-based flow control, plus the head (Open or Response) that the peer
// sends first. Data the peer sends is buffered up to the window this end
// granted, so a reader that stops only ever stops its own writer.
//
// Read, Write and CloseWrite may be called from different goroutines; Deliver
// is called by the transport's reader, and never blocks.
type Stream struct {
	id     uint64
	out    Sender
	window int // receive window this end grants

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change

	head       *tetherv1.Frame // Open or Response from the peer, until Head takes it
	headSeen   bool
	credit     int64 // bytes this end may still send
	writeEnded bool  // this end sent Data{end}

	queue     [][]byte
	allowance int64 // bytes the peer may still send before it needs a grant
	consumed  int64 // bytes read but not yet granted back
	readEnded bool  // the peer sent Data{end}

	err  error // set once: reset or closed
	done chan struct{}
}

// NewStream returns a stream with the given id whose frames go to out.
// window is the receive window this end grants; the caller must tell the peer
// about it (Open.window, or an initial Window frame via Grant).
func NewStream(id uint64, out Sender, window int) *Stream {
	window = ClampWindow(window)
	return &Stream{
		id:      id,
		out:     out,
		window:  window,
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// ID is the stream's id on its transport.
func (s *Stream) ID() uint64 { return s.id }

// Window is the receive window this end grants.
func (s *Stream) Window() int { return s.window }

// Done is closed when the stream is reset or closed.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err is the error that ended the stream, or nil while it is open.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Stream) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitLocked releases the lock until the state changes or ctx ends.
func (s *Stream) waitLocked(ctx context.Context) error {
	ch := s.changed
	s.mu.Unlock()
	defer s.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AllowPeer records that this end granted the peer n bytes outside a Window
// frame (Open.window) so Deliver accepts them.
func (s *Stream) AllowPeer(n int) {
	s.mu.Lock()
	s.allowance += int64(n)
	s.mu.Unlock()
}

// Grant gives the peer n more bytes of credit.
func (s *Stream) Grant(n int) error {
	if n <= 0 || n > MaxWindow {
		return fmt.Errorf("tunnel: grant of %d bytes outside 1..%d", n, MaxWindow)
	}
	s.AllowPeer(n)
	return s.send(&tetherv1.Frame{Kind: &tetherv1.Frame_Window{Window: &tetherv1.Window{Increment: uint32(n)}}})
}

// ClampWindow maps a configured window into 1..MaxWindow, DefaultWindow for
// zero or less, so no setting can make a peer refuse our frames.
func ClampWindow(n int) int {
	if n <= 0 {
		return DefaultWindow
	}
	return min(n, MaxWindow)
}

// send checks f as the peer will, so that nothing this end produces (a
// kube-apiserver's odd header, a setting out of range) can make the peer
// drop the connection that other streams share.
func (s *Stream) send(f *tetherv1.Frame) error {
	f.StreamId = s.id
	if err := Validate(f); err != nil {
		return fmt.Errorf("tunnel: refusing to send an invalid frame: %w", err)
	}
	return s.out.Send(f)
}

// SendHead sends an Open or Response frame. A Response body uses credit
// like Data; SendHead waits for none: a body too large for the credit at
// hand fails, and the caller sends it as Data instead.
func (s *Stream) SendHead(f *tetherv1.Frame) error {
	if r := f.GetResponse(); r != nil && len(r.Body) > 0 {
		s.mu.Lock()
		if int64(len(r.Body)) > s.credit {
			s.mu.Unlock()
			return errNoCredit
		}
		s.credit -= int64(len(r.Body))
		s.mu.Unlock()
	}
	s.HeadSent(f)
	return s.send(f)
}

var errNoCredit = errors.New("tunnel: response body exceeds the credit")

// Credit is how many bytes this end may send now.
func (s *Stream) Credit() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.credit)
}

// HeadSent records a head this end sent by other means: the window an Open
// grants, and a head that ends this direction at once.
func (s *Stream) HeadSent(f *tetherv1.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := f.GetOpen(); o != nil {
		s.allowance += int64(o.Window)
		s.writeEnded = s.writeEnded || o.End
	}
	if r := f.GetResponse(); r != nil {
		s.writeEnded = s.writeEnded || r.End
	}
}

// Head waits for the peer's Open or Response.
func (s *Stream) Head(ctx context.Context) (*tetherv1.Frame, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.head != nil {
			h := s.head
			s.head = nil
			return h, nil
		}
		if s.err != nil {
			return nil, s.err
		}
		if err := s.waitLocked(ctx); err != nil {
			return nil, err
		}
	}
}

// Write sends p as Data frames, waiting for credit. It returns early only if
// the stream ends.
func (s *Stream) Write(p []byte) (int, error) {
	return s.WriteContext(context.Background(), p)
}

// WriteContext is Write that also gives up when ctx ends.
func (s *Stream) WriteContext(ctx context.Context, p []byte) (int, error) {
	return s.write(ctx, p, false)
}

// WriteLast writes p and half-closes in the same frame: one message fewer
// per hop for a body whose end is known.
func (s *Stream) WriteLast(ctx context.Context, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, s.CloseWrite()
	}
	return s.write(ctx, p, true)
}

func (s *Stream) write(ctx context.Context, p []byte, last bool) (int, error) {
	written := 0
	for len(p) > 0 {
		s.mu.Lock()
		for s.credit <= 0 && s.err == nil && !s.writeEnded {
			if err := s.waitLocked(ctx); err != nil {
				s.mu.Unlock()
				return written, err
			}
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return written, err
		}
		if s.writeEnded {
			s.mu.Unlock()
			return written, errWriteAfterEnd
		}
		n := min(len(p), MaxChunk, int(s.credit))
		s.credit -= int64(n)
		end := last && n == len(p)
		if end {
			s.writeEnded = true
			s.broadcastLocked()
		}
		s.mu.Unlock()

		if err := s.send(&tetherv1.Frame{Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: p[:n], End: end}}}); err != nil {
			s.fail(&ResetError{Code: tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, Message: "sending data: " + err.Error()})
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

var errWriteAfterEnd = errors.New("tunnel: write after CloseWrite")

// CloseWrite half-closes this end: the peer reads EOF once it has read
// everything sent before.
func (s *Stream) CloseWrite() error {
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return err
	}
	if s.writeEnded {
		s.mu.Unlock()
		return nil
	}
	s.writeEnded = true
	s.broadcastLocked()
	s.mu.Unlock()
	return s.send(&tetherv1.Frame{Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}})
}

// Read reads Data the peer sent, granting credit back as it is consumed.
func (s *Stream) Read(p []byte) (int, error) {
	return s.ReadContext(context.Background(), p)
}

// ReadContext is Read that also gives up when ctx ends.
func (s *Stream) ReadContext(ctx context.Context, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	for len(s.queue) == 0 {
		if s.readEnded {
			s.mu.Unlock()
			return 0, io.EOF
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return 0, err
		}
		if err := s.waitLocked(ctx); err != nil {
			s.mu.Unlock()
			return 0, err
		}
	}
	n := 0
	for n < len(p) && len(s.queue) > 0 {
		c := copy(p[n:], s.queue[0])
		n += c
		if c == len(s.queue[0]) {
			s.queue[0] = nil
			s.queue = s.queue[1:]
		} else {
			s.queue[0] = s.queue[0][c:]
		}
	}
	s.consumed += int64(n)
	var grant int64
	// Grant in batches of half a window: fewer Window frames, and the peer
	// still never runs dry while we keep reading.
	if !s.readEnded && s.err == nil && s.consumed >= int64(s.window/2) {
		grant = s.consumed
		s.consumed = 0
		s.allowance += grant
	}
	s.mu.Unlock()
	if grant > 0 {
		if err := s.send(&tetherv1.Frame{Kind: &tetherv1.Frame_Window{Window: &tetherv1.Window{Increment: uint32(grant)}}}); err != nil {
			s.fail(&ResetError{Code: tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, Message: "granting credit: " + err.Error()})
		}
	}
	return n, nil
}

// Wait blocks until a Read would not: data is there, the peer ended its
// direction, the stream failed, or ctx ended (its error). A reader of a
// long, mostly quiet stream (a watch, logs -f) waits here first, and holds
// a buffer only while there is something to read into it.
func (s *Stream) Wait(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) == 0 && !s.readEnded && s.err == nil {
		if err := s.waitLocked(ctx); err != nil {
			return err
		}
	}
	return nil
}

// AtEOF reports, without waiting, whether everything the peer sent has been
// read and the peer has ended its direction.
func (s *Stream) AtEOF() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readEnded && len(s.queue) == 0
}

// Buffered is how many received bytes wait to be read.
func (s *Stream) Buffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.queue {
		n += len(c)
	}
	return n
}

// Reset ends the stream in both directions and tells the peer why.
func (s *Stream) Reset(code tetherv1.ResetCode, message string) {
	if !s.fail(&ResetError{Code: code, Message: message}) {
		return
	}
	_ = s.send(&tetherv1.Frame{Kind: &tetherv1.Frame_Reset_{Reset_: &tetherv1.Reset{Code: code, Message: message}}})
}

// Close ends the stream locally without telling the peer: for a stream that
// finished cleanly in both directions, or whose transport is gone.
func (s *Stream) Close(err error) {
	if err == nil {
		err = errClosed
	}
	s.fail(err)
}

var errClosed = errors.New("tunnel: stream closed")

// Finished reports whether both directions ended cleanly: this end sent its
// end and the peer's end has been read.
func (s *Stream) Finished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeEnded && s.readEnded && len(s.queue) == 0
}

func (s *Stream) fail(err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	s.err = err
	close(s.done)
	s.broadcastLocked()
	return true
}

// Deliver hands the stream a frame the peer sent. It returns an error, after
// resetting the stream, when the peer broke the protocol.
func (s *Stream) Deliver(f *tetherv1.Frame) error {
	switch k := f.Kind.(type) {
	case *tetherv1.Frame_Data:
		return s.deliverData(k.Data)
	case *tetherv1.Frame_Window:
		s.mu.Lock()
		s.credit += int64(k.Window.Increment)
		s.broadcastLocked()
		s.mu.Unlock()
		return nil
	case *tetherv1.Frame_Reset_:
		s.fail(&ResetError{Code: k.Reset_.Code, Message: k.Reset_.Message, Remote: true})
		return nil
	case *tetherv1.Frame_Open, *tetherv1.Frame_Response:
		s.mu.Lock()
		if s.headSeen {
			s.mu.Unlock()
			return s.protocolError("a second head frame")
		}
		if r := f.GetResponse(); r != nil && int64(len(r.Body)) > s.allowance {
			allowance := s.allowance
			s.mu.Unlock()
			return s.protocolError(fmt.Sprintf("peer sent a %d byte body with %d of credit", len(r.Body), allowance))
		}
		s.headSeen = true
		s.head = f
		if o := f.GetOpen(); o != nil {
			s.credit += int64(o.Window)
			s.readEnded = o.End
		}
		if r := f.GetResponse(); r != nil {
			// The body rides with the head, for whoever takes the head; it
			// never enters the read queue.
			s.allowance -= int64(len(r.Body))
			s.readEnded = s.readEnded || r.End
		}
		s.broadcastLocked()
		s.mu.Unlock()
		return nil
	default:
		return s.protocolError(fmt.Sprintf("unexpected %T on a stream", f.Kind))
	}
}

func (s *Stream) deliverData(d *tetherv1.Data) error {
	s.mu.Lock()
	if !s.headSeen {
		s.mu.Unlock()
		return s.protocolError("data before the head")
	}
	if s.readEnded {
		s.mu.Unlock()
		return s.protocolError("data after end")
	}
	n := int64(len(d.Chunk))
	if n > s.allowance {
		s.mu.Unlock()
		return s.protocolError(fmt.Sprintf("peer sent %d bytes with %d of credit", n, s.allowance))
	}
	s.allowance -= n
	if n > 0 {
		// proto.Unmarshal copies bytes fields, so the chunk is ours to keep.
		s.queue = append(s.queue, d.Chunk)
	}
	if d.End {
		s.readEnded = true
	}
	s.broadcastLocked()
	s.mu.Unlock()
	return nil
}

func (s *Stream) protocolError(msg string) error {
	s.Reset(tetherv1.ResetCode_RESET_CODE_PROTOCOL, msg)
	return &ResetError{Code: tetherv1.ResetCode_RESET_CODE_PROTOCOL, Message: msg}
}
