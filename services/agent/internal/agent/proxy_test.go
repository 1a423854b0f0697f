package agent

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/tunnel"
)

// frames records what a stream sends, and tells who waits for one.
type frames struct {
	mu   sync.Mutex
	sent []*tetherv1.Frame
	more chan struct{}
}

func (f *frames) stream(t *testing.T) *tunnel.Stream {
	t.Helper()
	f.more = make(chan struct{}, 16)
	s := tunnel.NewStream(1, tunnel.SenderFunc(func(fr *tetherv1.Frame) error {
		f.mu.Lock()
		f.sent = append(f.sent, fr)
		f.mu.Unlock()
		f.more <- struct{}{}
		return nil
	}), 0)
	open := &tetherv1.Open{RequestId: "r1", ClusterId: "dev", Method: "GET", Path: "/api/v1/namespaces/default/configmaps", End: true, Window: 1 << 16}
	if err := s.Deliver(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: open}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// next waits for the i-th frame sent.
func (f *frames) next(t *testing.T, i int) *tetherv1.Frame {
	t.Helper()
	for {
		f.mu.Lock()
		if len(f.sent) > i {
			fr := f.sent[i]
			f.mu.Unlock()
			return fr
		}
		f.mu.Unlock()
		select {
		case <-f.more:
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %d was never sent", i)
		}
	}
}

// head waits for the first frame, which must be a response head.
func (f *frames) head(t *testing.T) *tetherv1.Response {
	t.Helper()
	fr := f.next(t, 0)
	if fr.GetResponse() == nil {
		t.Fatalf("first frame %v is not a response", fr)
	}
	return fr.GetResponse()
}

var unused = roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("not called") })

// TestStartBody: a body of unknown length goes with its head whole when
// it ends within a chunk, with what fills the chunk when it does not, and
// with what came so far when the rest is slow to come, without waiting for
// more; a body that breaks before its head is a 502 Status.
func TestStartBody(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name     string
		buf      int
		write    []string // written, then the body ends
		wantHead string
		wantEnd  bool
		wantRest string
	}{
		{"ends within a chunk", 64, []string{"ab", "cd"}, "abcd", true, ""},
		{"fills a chunk", 4, []string{"abcdef"}, "", false, "abcd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAgentWith(t, unused)
			// Whole bodies here: the timer must not send a head first.
			a.holdBack = time.Hour
			var f frames
			s := f.stream(t)
			pr, pw := io.Pipe()
			go func() {
				for _, w := range tt.write {
					_, _ = pw.Write([]byte(w))
				}
				pw.Close()
			}()
			rh := &tetherv1.Response{Status: 200}
			rest, ok := a.startBody(t.Context(), log, s, rh, pr, make([]byte, tt.buf))
			if !ok || string(rest) != tt.wantRest {
				t.Fatalf("startBody = %q, %v; want %q, true", rest, ok, tt.wantRest)
			}
			if h := f.head(t); string(h.Body) != tt.wantHead || h.End != tt.wantEnd {
				t.Fatalf("head body %q end %v; want %q, %v", h.Body, h.End, tt.wantHead, tt.wantEnd)
			}
		})
	}

	t.Run("a slow stream is not held back", func(t *testing.T) {
		a := newTestAgentWith(t, unused)
		var f frames
		s := f.stream(t)
		pr, pw := io.Pipe()
		type result struct {
			rest []byte
			ok   bool
		}
		done := make(chan result, 1)
		go func() {
			rest, ok := a.startBody(t.Context(), log, s, &tetherv1.Response{Status: 200}, pr, make([]byte, 64))
			done <- result{rest, ok}
		}()
		if _, err := pw.Write([]byte("line 1\n")); err != nil {
			t.Fatal(err)
		}
		// The second line is written only once the first has gone: held
		// back, it would never go.
		if h := f.head(t); len(h.Body) != 0 || h.End {
			t.Fatalf("head body %q end %v; want the head alone", h.Body, h.End)
		}
		if d := f.next(t, 1).GetData(); string(d.GetChunk()) != "line 1\n" || d.GetEnd() {
			t.Fatalf("second frame %v; want the first line", d)
		}
		if _, err := pw.Write([]byte("line 2\n")); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if !r.ok || string(r.rest) != "line 2\n" {
			t.Fatalf("startBody = %q, %v; want the second line to send next", r.rest, r.ok)
		}
		pw.Close()
	})

	t.Run("a body broken before its head", func(t *testing.T) {
		a := newTestAgentWith(t, unused)
		var f frames
		s := f.stream(t)
		pr, pw := io.Pipe()
		pw.CloseWithError(errors.New("connection reset"))
		if _, ok := a.startBody(t.Context(), log, s, &tetherv1.Response{Status: 200}, pr, make([]byte, 64)); ok {
			t.Fatal("a broken body was taken")
		}
		if h := f.head(t); h.Status != http.StatusBadGateway || !h.End {
			t.Fatalf("head %d end %v; want a 502 Status", h.Status, h.End)
		}
	})
}
