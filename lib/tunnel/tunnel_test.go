package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

var fastKeepalive = Keepalive{Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond}

// pair runs a caller Mux and an agent-like Mux whose accept is serve.
func pair(t *testing.T, window int, serve func(ctx context.Context, s *Stream)) (*Mux, *pipeEnd, *pipeEnd) {
	t.Helper()
	a, b := pipe()
	ca, err := NewConn(a, DefaultKeepalive, a.Close)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := NewConn(b, DefaultKeepalive, b.Close)
	if err != nil {
		t.Fatal(err)
	}
	caller := NewMux(ca, window, nil)
	callee := NewMux(cb, window, serve)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = caller.Run(ctx) }()
	go func() { defer wg.Done(); _ = callee.Run(ctx) }()
	t.Cleanup(func() { cancel(); a.Close(); b.Close(); wg.Wait() })
	return caller, a, b
}

func open(path string, end bool) *tetherv1.Open {
	return &tetherv1.Open{RequestId: "r-" + path, ClusterId: "c1", Method: "POST", Path: path, End: end}
}

// echo grants credit for the request body and writes it back.
func echo(ctx context.Context, s *Stream) {
	if _, err := s.Head(ctx); err != nil {
		return
	}
	if err := s.Grant(s.Window()); err != nil {
		return
	}
	if err := s.SendHead(&tetherv1.Frame{Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200}}}); err != nil {
		return
	}
	if _, err := io.Copy(s, s); err != nil {
		return
	}
	_ = s.CloseWrite()
}

func TestStreamEchoLargeBodyThroughSmallWindow(t *testing.T) {
	caller, _, _ := pair(t, 128<<10, echo)
	body := make([]byte, 5<<20+123)
	_, _ = rand.Read(body)

	s, err := caller.Open(open("/echo", false))
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Forget(s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := s.WriteContext(ctx, body)
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	head, err := s.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := head.GetResponse().GetStatus(); got != 200 {
		t.Fatalf("status %d", got)
	}
	var got bytes.Buffer
	buf := make([]byte, 32<<10)
	maxBuffered := 0
	for {
		maxBuffered = max(maxBuffered, s.Buffered())
		n, err := s.ReadContext(ctx, buf)
		got.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), body) {
		t.Fatalf("echoed %d bytes, want %d identical", got.Len(), len(body))
	}
	if maxBuffered > s.Window() {
		t.Fatalf("buffered %d bytes with a window of %d", maxBuffered, s.Window())
	}
}

// A stream whose reader stalls must not hold up another on the same
// connection: the stalled writer runs out of credit, nothing else does.
func TestStalledStreamDoesNotBlockOthers(t *testing.T) {
	const window = 64 << 10
	caller, _, _ := pair(t, window, func(ctx context.Context, s *Stream) {
		h, err := s.Head(ctx)
		if err != nil {
			return
		}
		_ = s.SendHead(&tetherv1.Frame{Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200}}})
		if h.GetOpen().Path == "/firehose" {
			chunk := make([]byte, 8<<10)
			for {
				if _, err := s.WriteContext(ctx, chunk); err != nil {
					return
				}
			}
		}
		_, _ = s.Write([]byte("pong"))
		_ = s.CloseWrite()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stalled, err := caller.Open(open("/firehose", true))
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Forget(stalled)
	if _, err := stalled.Head(ctx); err != nil {
		t.Fatal(err)
	}
	// Wait until the firehose has used up its credit: the stalled buffer is full.
	for stalled.Buffered() < window {
		select {
		case <-ctx.Done():
			t.Fatalf("firehose filled only %d of %d bytes", stalled.Buffered(), window)
		case <-time.After(time.Millisecond):
		}
	}
	for i := range 50 {
		s, err := caller.Open(open("/ping", true))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Head(ctx); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(readerCtx{ctx, s})
		if err != nil || string(b) != "pong" {
			t.Fatalf("request %d: %q, %v", i, b, err)
		}
		caller.Forget(s)
	}
	if got := stalled.Buffered(); got > window {
		t.Fatalf("stalled stream buffered %d bytes past its window %d", got, window)
	}
}

type readerCtx struct {
	ctx context.Context
	s   *Stream
}

func (r readerCtx) Read(p []byte) (int, error) { return r.s.ReadContext(r.ctx, p) }

func TestCancelReachesTheAcceptingSide(t *testing.T) {
	canceled := make(chan error, 1)
	caller, _, _ := pair(t, 0, func(ctx context.Context, s *Stream) {
		if _, err := s.Head(ctx); err != nil {
			return
		}
		<-s.Done() // a watch that never ends by itself
		canceled <- s.Err()
	})
	s, err := caller.Open(open("/watch", true))
	if err != nil {
		t.Fatal(err)
	}
	s.Reset(tetherv1.ResetCode_RESET_CODE_CANCELED, "client went away")
	select {
	case err := <-canceled:
		var re *ResetError
		if !errors.As(err, &re) || re.Code != tetherv1.ResetCode_RESET_CODE_CANCELED || !re.Remote {
			t.Fatalf("accepting side saw %v, want a remote CANCELED reset", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reset never reached the accepting side")
	}
}

func TestLostConnectionResetsStreams(t *testing.T) {
	caller, a, _ := pair(t, 0, func(ctx context.Context, s *Stream) { <-s.Done() })
	s, err := caller.Open(open("/watch", true))
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("stream outlived its connection")
	}
	if CodeOf(s.Err()) != tetherv1.ResetCode_RESET_CODE_UNAVAILABLE {
		t.Fatalf("got %v, want UNAVAILABLE", s.Err())
	}
}

func TestWindowOverrunIsAProtocolError(t *testing.T) {
	s := NewStream(1, SenderFunc(func(*tetherv1.Frame) error { return nil }), 10)
	s.AllowPeer(10)
	if err := s.Deliver(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200}}}); err != nil {
		t.Fatal(err)
	}
	data := func(n int) *tetherv1.Frame {
		return &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: make([]byte, n)}}}
	}
	if err := s.Deliver(data(10)); err != nil {
		t.Fatalf("within the window: %v", err)
	}
	err := s.Deliver(data(1))
	if CodeOf(err) != tetherv1.ResetCode_RESET_CODE_PROTOCOL {
		t.Fatalf("past the window: got %v, want a PROTOCOL reset", err)
	}
	if CodeOf(s.Err()) != tetherv1.ResetCode_RESET_CODE_PROTOCOL {
		t.Fatalf("stream not reset: %v", s.Err())
	}
}

func TestKeepaliveDetectsASilentPeer(t *testing.T) {
	a, b := pipe()
	defer a.Close()
	defer b.Close()
	ca, err := NewConn(a, fastKeepalive, a.Close)
	if err != nil {
		t.Fatal(err)
	}
	// b never answers: its end reads nothing and sends nothing.
	errc := make(chan error, 1)
	go func() { errc <- ca.Run(context.Background(), func(*tetherv1.Frame) error { return nil }) }()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrPeerDead) {
			t.Fatalf("got %v, want ErrPeerDead", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a silent peer was never declared dead")
	}
}

func TestKeepalivePingsKeepAQuietConnectionAlive(t *testing.T) {
	a, b := pipe()
	ca, _ := NewConn(a, fastKeepalive, a.Close)
	cb, _ := NewConn(b, fastKeepalive, b.Close)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	go func() { errc <- ca.Run(ctx, func(*tetherv1.Frame) error { return nil }) }()
	go func() { errc <- cb.Run(ctx, func(*tetherv1.Frame) error { return nil }) }()
	// Ten timeouts of silence from the application: pings alone keep it up.
	select {
	case err := <-errc:
		t.Fatalf("connection ended while idle: %v", err)
	case <-time.After(10 * fastKeepalive.Timeout):
	}
	cancel()
	// Both ends return; which error each sees depends on who closes first.
	for range 2 {
		<-errc
	}
}

// ids makes n distinct ids of size bytes each.
func ids(n, size int) []string {
	out := make([]string, n)
	for i := range out {
		id := fmt.Sprintf("%d-", i)
		out[i] = id + strings.Repeat("x", size-len(id))
	}
	return out
}

func TestValidate(t *testing.T) {
	okOpen := func() *tetherv1.Open {
		return &tetherv1.Open{RequestId: "r", ClusterId: "c", Method: "GET", Path: "/api"}
	}
	tests := []struct {
		name    string
		frame   *tetherv1.Frame
		wantErr bool
	}{
		{"open", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: okOpen()}}, false},
		{"open on stream zero", &tetherv1.Frame{Kind: &tetherv1.Frame_Open{Open: okOpen()}}, true},
		{"open without path", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: &tetherv1.Open{RequestId: "r", ClusterId: "c", Method: "GET"}}}, true},
		{"relative path", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: &tetherv1.Open{RequestId: "r", ClusterId: "c", Method: "GET", Path: "api"}}}, true},
		{"huge window", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: func() *tetherv1.Open { o := okOpen(); o.Window = MaxWindow + 1; return o }()}}, true},
		{"no kind", &tetherv1.Frame{StreamId: 1}, true},
		{"ping", &tetherv1.Frame{Kind: &tetherv1.Frame_Ping{Ping: &tetherv1.Ping{}}}, false},
		{"ping on a stream", &tetherv1.Frame{StreamId: 3, Kind: &tetherv1.Frame_Ping{Ping: &tetherv1.Ping{}}}, true},
		{"status 42", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 42}}}, true},
		{"oversized chunk", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: make([]byte, MaxChunk+1)}}}, true},
		{"zero window", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Window{Window: &tetherv1.Window{}}}, true},
		{"header value not UTF-8", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, Headers: []*tetherv1.Header{{Name: "X", Values: []string{"caf\xe9"}}}}}}, true},
		{"header without name", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, Headers: []*tetherv1.Header{{Values: []string{"x"}}}}}}, true},
		{"upgrade open", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: func() *tetherv1.Open { o := okOpen(); o.End, o.Upgrade = false, "websocket"; return o }()}}, false},
		{"upgrade open that ends", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: func() *tetherv1.Open { o := okOpen(); o.End, o.Upgrade = true, "websocket"; return o }()}}, true},
		{"switching protocols", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 101, Upgrade: "SPDY/3.1"}}}, false},
		{"101 without a protocol", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 101}}}, true},
		{"101 that ends", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 101, Upgrade: "websocket", End: true}}}, true},
		{"protocol on a 200", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, Upgrade: "websocket"}}}, true},
		{"hello with ended sessions", &tetherv1.Frame{Kind: &tetherv1.Frame_Hello{Hello: &tetherv1.Hello{ClusterId: "c", EndedSessions: []string{"s1", "s2"}, HeldSubscribers: []string{"sub-1"}}}}, false},
		{"hello with too many ended sessions", &tetherv1.Frame{Kind: &tetherv1.Frame_Hello{Hello: &tetherv1.Hello{ClusterId: "c", EndedSessions: ids(MaxIDs+1, 8)}}}, true},
		{"hello with a held subscriber too long", &tetherv1.Frame{Kind: &tetherv1.Frame_Hello{Hello: &tetherv1.Hello{ClusterId: "c", HeldSubscribers: ids(1, maxIDBytes+1)}}}, true},
		{"open with previous sessions", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: func() *tetherv1.Open {
			o := okOpen()
			o.Attempt, o.PreviousSessions = 1, ids(MaxIDs, maxIDBytes)
			return o
		}()}}, false},
		{"open with too many previous sessions", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: func() *tetherv1.Open { o := okOpen(); o.PreviousSessions = ids(MaxIDs+1, 8); return o }()}}, true},
		{"previous session not UTF-8", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: func() *tetherv1.Open { o := okOpen(); o.PreviousSessions = []string{"\xff"}; return o }()}}, true},
		{"oversized signed identity", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: func() *tetherv1.Open {
			o := okOpen()
			o.SignedIdentity = &tetherv1.SignedIdentity{Assertion: make([]byte, maxSignedIdentity+1)}
			return o
		}()}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.frame)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestWriteLastEndsInTheSameFrame(t *testing.T) {
	var frames []*tetherv1.Frame
	s := NewStream(1, SenderFunc(func(f *tetherv1.Frame) error { frames = append(frames, f); return nil }), 0)
	_ = s.Deliver(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Window{Window: &tetherv1.Window{Increment: 1 << 20}}})
	body := make([]byte, MaxChunk+10)
	if _, err := s.WriteLast(context.Background(), body); err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 || frames[0].GetData().End || !frames[1].GetData().End || len(frames[1].GetData().Chunk) != 10 {
		t.Fatalf("got %d frames; want a full chunk, then the last 10 bytes with end", len(frames))
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("wrote after the last write")
	}
	if err := s.CloseWrite(); err != nil || len(frames) != 2 {
		t.Fatalf("CloseWrite after WriteLast sent another frame: %v, %d frames", err, len(frames))
	}
}

func TestResponseBodyInTheHead(t *testing.T) {
	caller, _, _ := pair(t, 0, func(ctx context.Context, s *Stream) {
		if _, err := s.Head(ctx); err != nil {
			return
		}
		_ = s.SendHead(&tetherv1.Frame{Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, Body: []byte("{}"), End: true}}})
	})
	s, err := caller.Open(open("/small", true))
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Forget(s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := s.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(h.GetResponse().Body) != "{}" || !s.AtEOF() || !s.Finished() {
		t.Fatalf("head %v, AtEOF %v, Finished %v", h, s.AtEOF(), s.Finished())
	}
	if n, err := s.Read(make([]byte, 8)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("Read after a whole body in the head: %d, %v", n, err)
	}
}

func TestResponseBodyBeyondCreditIsRefused(t *testing.T) {
	s := NewStream(1, SenderFunc(func(*tetherv1.Frame) error { return nil }), 0)
	// No credit: Open.window was never seen.
	err := s.SendHead(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, Body: []byte("x"), End: true}}})
	if err == nil {
		t.Fatal("sent a body without credit")
	}
	r := NewStream(1, SenderFunc(func(*tetherv1.Frame) error { return nil }), 0)
	if err := r.Deliver(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, Body: []byte("x"), End: true}}}); CodeOf(err) != tetherv1.ResetCode_RESET_CODE_PROTOCOL {
		t.Fatalf("accepted a body beyond the credit it granted: %v", err)
	}
}

func TestDataBeforeTheHeadIsAProtocolError(t *testing.T) {
	s := NewStream(1, SenderFunc(func(*tetherv1.Frame) error { return nil }), 10)
	s.AllowPeer(10)
	err := s.Deliver(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: []byte("x")}}})
	if CodeOf(err) != tetherv1.ResetCode_RESET_CODE_PROTOCOL {
		t.Fatalf("got %v, want a PROTOCOL reset", err)
	}
}

// A head this end cannot send whole (a status no peer accepts) fails at
// the sender: the peer never sees it, so the connection other streams use
// lives on.
func TestInvalidHeadIsRefusedAtTheSender(t *testing.T) {
	var sent int
	s := NewStream(1, SenderFunc(func(*tetherv1.Frame) error { sent++; return nil }), 0)
	if err := s.SendHead(&tetherv1.Frame{Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 999}}}); err == nil || sent != 0 {
		t.Fatalf("sent an invalid head: err %v, %d frames", err, sent)
	}
	if err := s.Grant(MaxWindow + 1); err == nil {
		t.Fatal("granted more than MaxWindow")
	}
	if ClampWindow(64<<20) != MaxWindow || ClampWindow(0) != DefaultWindow {
		t.Fatal("ClampWindow")
	}
}

// A frame that breaks the protocol ends its own stream only.
func TestInvalidFrameResetsOnlyItsStream(t *testing.T) {
	caller, a, _ := pair(t, 0, func(ctx context.Context, s *Stream) { <-s.Done() })
	watch, err := caller.Open(open("/watch", true))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := caller.Open(open("/bad", true))
	if err != nil {
		t.Fatal(err)
	}
	// What a broken peer would send: a head no one may send, bypassing the
	// sender's own check.
	b, _ := Encode(&tetherv1.Frame{StreamId: bad.ID(), Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{}}})
	raw := append([]byte(nil), b...)
	f, _ := Decode(raw)
	f.GetData().Chunk = make([]byte, MaxChunk+1)
	enc, _ := proto.Marshal(f)
	a.out <- enc
	select {
	case <-bad.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stream with the invalid frame lives on")
	}
	select {
	case <-watch.Done():
		t.Fatalf("a sibling stream died too: %v", watch.Err())
	case <-time.After(200 * time.Millisecond):
	}
}

func TestKeepaliveDetectsADeadPeerWhileASendIsBlocked(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	tr := &blockingTransport{block: block, recv: make(chan struct{})}
	var once sync.Once
	c, err := NewConn(tr, fastKeepalive, func() { once.Do(func() { close(tr.recv) }) })
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{}}}) }()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background(), func(*tetherv1.Frame) error { return nil }) }()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrPeerDead) {
			t.Fatalf("got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a blocked Send kept the keepalive from declaring the peer dead")
	}
}

// blockingTransport's Send blocks until block closes; Receive until recv closes.
type blockingTransport struct {
	block, recv chan struct{}
}

func (b *blockingTransport) Send(*tetherv1.Frame) error { <-b.block; return errPipeClosed }
func (b *blockingTransport) Receive() (*tetherv1.Frame, error) {
	<-b.recv
	return nil, io.EOF
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want time.Duration
		ok   bool
	}{
		{"a hint, rounded up to seconds", fmt.Errorf("waiting for welcome: %w", RetryLater(connect.CodeResourceExhausted, errors.New("busy"), 1500*time.Millisecond)), 2 * time.Second, true},
		{"at least a second", RetryLater(connect.CodeUnavailable, errors.New("busy"), 0), time.Second, true},
		{"no hint", connect.NewError(connect.CodeUnavailable, errors.New("down")), 0, false},
		{"not a Connect error", errors.New("eof"), 0, false},
	}
	for _, tt := range tests {
		if got, ok := RetryAfter(tt.err); got != tt.want || ok != tt.ok {
			t.Errorf("%s: %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

// Wait returns once a Read would not block, and only then: for data, for
// the peer's end, for a reset, or with ctx's error.
func TestWaitReturnsWhenAReadWouldNotBlock(t *testing.T) {
	head := &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200}}}
	tests := []struct {
		name    string
		deliver *tetherv1.Frame // nil: nothing comes
		wantErr error
	}{
		{"data", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: []byte("ev")}}}, nil},
		{"the peer's end", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}}, nil},
		{"a reset", &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Reset_{Reset_: &tetherv1.Reset{Code: tetherv1.ResetCode_RESET_CODE_UNAVAILABLE}}}, nil},
		{"nothing", nil, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream(1, SenderFunc(func(*tetherv1.Frame) error { return nil }), 10)
			s.AllowPeer(10)
			if err := s.Deliver(head); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			waited := make(chan error, 1)
			go func() { waited <- s.Wait(ctx) }()
			select {
			case err := <-waited:
				t.Fatalf("Wait returned %v before anything came", err)
			case <-time.After(20 * time.Millisecond):
			}
			if tt.deliver != nil {
				if err := s.Deliver(tt.deliver); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-waited; !errors.Is(err, tt.wantErr) {
				t.Fatalf("Wait = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
