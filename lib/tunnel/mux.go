package tunnel

import (
	"context"
	"errors"
	"sync"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// Mux runs many streams over one Conn. The side that accepts requests (the
// agent) passes an accept func; the side that opens them calls Open.
type Mux struct {
	conn   *Conn
	window int
	accept func(ctx context.Context, s *Stream)

	mu      sync.Mutex
	streams map[uint64]*Stream
	nextID  uint64
	closed  error
	wg      sync.WaitGroup

	// OnControl, if set before Run, gets the connection-level frames Conn
	// does not handle itself (GoAway). It must not block.
	OnControl func(*tetherv1.Frame)
}

// NewMux returns a Mux on conn. accept runs in its own goroutine for every
// Open the peer sends, with the Open available from s.Head; the stream is
// forgotten when accept returns. accept may be nil on a side that only opens.
func NewMux(conn *Conn, window int, accept func(ctx context.Context, s *Stream)) *Mux {
	window = ClampWindow(window)
	return &Mux{conn: conn, window: window, accept: accept, streams: map[uint64]*Stream{}, nextID: 1}
}

// Run serves the connection until it fails; then every open stream is reset
// with RESET_CODE_UNAVAILABLE and Run waits for accept funcs to return.
func (m *Mux) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	err := m.conn.Run(ctx, func(f *tetherv1.Frame) error { return m.handle(ctx, f) })
	m.mu.Lock()
	m.closed = err
	streams := m.streams
	m.streams = map[uint64]*Stream{}
	m.mu.Unlock()
	for _, s := range streams {
		s.Close(&ResetError{Code: tetherv1.ResetCode_RESET_CODE_UNAVAILABLE, Message: "tunnel connection lost"})
	}
	cancel()
	m.wg.Wait()
	return err
}

// Len is the number of open streams.
func (m *Mux) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.streams)
}

// Open starts a request toward the peer. The returned stream reads the
// peer's Response with Head; Forget must be called when done with it.
func (m *Mux) Open(open *tetherv1.Open) (*Stream, error) {
	m.mu.Lock()
	if m.closed != nil {
		m.mu.Unlock()
		return nil, m.closed
	}
	id := m.nextID
	m.nextID += 2 // odd ids for the opener; nothing else allocates here
	if open.Window == 0 {
		open.Window = uint32(m.window)
	}
	s := NewStream(id, m.conn, int(open.Window))
	m.streams[id] = s
	m.mu.Unlock()
	if err := s.SendHead(&tetherv1.Frame{Kind: &tetherv1.Frame_Open{Open: open}}); err != nil {
		m.Forget(s)
		return nil, err
	}
	return s, nil
}

// Forget drops s from the Mux; late frames for it are answered with Reset.
func (m *Mux) Forget(s *Stream) {
	m.mu.Lock()
	if m.streams[s.id] == s {
		delete(m.streams, s.id)
	}
	m.mu.Unlock()
	s.Close(nil)
}

var errNoAccept = errors.New("this side does not accept streams")

func (m *Mux) handle(ctx context.Context, f *tetherv1.Frame) error {
	if f.StreamId == 0 {
		// Connection-level frames beyond the keepalive (GoAway): the
		// owner's, not a stream's.
		if m.OnControl != nil {
			m.OnControl(f)
		}
		return nil
	}
	m.mu.Lock()
	s, ok := m.streams[f.StreamId]
	if !ok && f.GetOpen() != nil && m.accept != nil {
		s = NewStream(f.StreamId, m.conn, m.window)
		m.streams[f.StreamId] = s
		m.wg.Add(1)
		m.mu.Unlock()
		if err := s.Deliver(f); err != nil {
			m.Forget(s)
			m.wg.Done()
			return nil
		}
		go func() {
			defer m.wg.Done()
			defer m.Forget(s)
			m.accept(ctx, s)
		}()
		return nil
	}
	m.mu.Unlock()
	if !ok {
		// A late frame for a stream that is gone. Tell the peer unless it is
		// already tearing the stream down, so resets never ping-pong.
		switch f.Kind.(type) {
		case *tetherv1.Frame_Reset_, *tetherv1.Frame_Window:
			return nil
		}
		msg := "unknown stream"
		if m.accept == nil {
			msg = errNoAccept.Error()
		}
		return m.conn.Send(ResetFrame(f.StreamId, tetherv1.ResetCode_RESET_CODE_CANCELED, msg))
	}
	// A protocol error resets just that stream; the connection goes on.
	_ = s.Deliver(f)
	return nil
}
