package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// tcpPair is a connected loopback TCP pair: Splice's conn and the far end
// (the kube-apiserver, in the agent).
func tcpPair(t *testing.T) (near, far *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-accepted
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); a.Close() })
	return c.(*net.TCPConn), a.(*net.TCPConn)
}

// spliced opens an upgraded stream whose callee splices it to a TCP
// connection, and returns the caller's stream, the far end of that
// connection, and Splice's result.
func spliced(t *testing.T, window int) (*Stream, *net.TCPConn, <-chan error) {
	t.Helper()
	near, far := tcpPair(t)
	result := make(chan error, 1)
	caller, _, _ := pair(t, window, func(ctx context.Context, s *Stream) {
		if _, err := s.Head(ctx); err != nil {
			result <- err
			return
		}
		if err := s.Grant(s.Window()); err != nil {
			result <- err
			return
		}
		if err := s.SendHead(&tetherv1.Frame{Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 101, Upgrade: "test"}}}); err != nil {
			result <- err
			return
		}
		result <- Splice(ctx, s, near)
	})
	o := open("/upgrade", false)
	o.Upgrade = "test"
	s, err := caller.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caller.Forget(s) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	head, err := s.Head(ctx)
	if err != nil || head.GetResponse().GetStatus() != 101 {
		t.Fatalf("head %v, %v", head, err)
	}
	return s, far, result
}

func TestSpliceCarriesBothWaysAndHalfCloses(t *testing.T) {
	s, far, result := spliced(t, 64<<10)
	up := make([]byte, 3<<20)
	down := make([]byte, 2<<20)
	_, _ = rand.Read(up)
	_, _ = rand.Read(down)

	// The far end writes its bytes and half-closes, while still reading: its
	// end must not end ours.
	farGot := make(chan []byte, 1)
	go func() {
		_, _ = far.Write(down)
		_ = far.CloseWrite()
	}()
	go func() {
		b, _ := io.ReadAll(far)
		farGot <- b
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(s)
		got <- b
	}()
	if !bytes.Equal(<-got, down) {
		t.Fatal("bytes from the connection arrived changed")
	}
	// Our direction still flows after theirs ended.
	if _, err := s.Write(up); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(<-farGot, up) {
		t.Fatal("bytes to the connection arrived changed")
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("Splice = %v after both ends closed cleanly", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Splice did not return after both directions ended")
	}
}

func TestSpliceEndsWhenEitherSideBreaks(t *testing.T) {
	tests := []struct {
		name string
		cut  func(s *Stream, far *net.TCPConn)
	}{
		{"caller resets", func(s *Stream, _ *net.TCPConn) { s.Reset(tetherv1.ResetCode_RESET_CODE_CANCELED, "client went away") }},
		{"connection reset", func(_ *Stream, far *net.TCPConn) { _ = far.SetLinger(0); _ = far.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, far, result := spliced(t, 64<<10)
			tt.cut(s, far)
			select {
			case <-result:
			case <-time.After(2 * time.Second):
				t.Fatal("Splice still running a second after one side broke")
			}
			// Both ends learn of it: the far end reads an end, the caller's
			// stream an error (a reset or an end, never a hang).
			_ = far.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.Copy(io.Discard, far); err != nil && !isClosed(err) {
				t.Fatalf("far end: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if _, err := io.Copy(io.Discard, ctxReader{ctx, s}); ctx.Err() != nil {
				t.Fatalf("caller still waiting: %v", err)
			}
		})
	}
}

// isClosed tells an ended connection from a read that timed out waiting.
func isClosed(err error) bool {
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

type ctxReader struct {
	ctx context.Context
	s   *Stream
}

func (r ctxReader) Read(p []byte) (int, error) { return r.s.ReadContext(r.ctx, p) }
