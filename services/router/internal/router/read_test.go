package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/tunnel"
)

func TestKindOf(t *testing.T) {
	tests := []struct {
		name  string
		open  *tetherv1.Open
		kind  kind
		watch bool
	}{
		{"get", &tetherv1.Open{Method: "GET", Path: "/api/v1/namespaces", End: true}, read, false},
		{"list with chunks", &tetherv1.Open{Method: "GET", Path: "/api/v1/pods", Query: "limit=500&continue=x", End: true}, read, false},
		{"head", &tetherv1.Open{Method: "HEAD", Path: "/api", End: true}, read, false},
		{"watch", &tetherv1.Open{Method: "GET", Path: "/api/v1/pods", Query: "watch=true", End: true}, read, true},
		{"watch=1", &tetherv1.Open{Method: "GET", Path: "/api/v1/pods", Query: "watch=1", End: true}, read, true},
		{"old watch path", &tetherv1.Open{Method: "GET", Path: "/api/v1/watch/pods", End: true}, read, true},
		{"logs -f", &tetherv1.Open{Method: "GET", Path: "/api/v1/namespaces/d/pods/p/log", Query: "follow=true", End: true}, read, true},
		{"exec", &tetherv1.Open{Method: "GET", Path: "/api/v1/namespaces/d/pods/p/exec", Upgrade: "websocket"}, upgrade, false},
		{"post", &tetherv1.Open{Method: "POST", Path: "/api/v1/namespaces"}, mutation, false},
		{"delete", &tetherv1.Open{Method: "DELETE", Path: "/api/v1/namespaces/x", End: true}, mutation, false},
		{"patch", &tetherv1.Open{Method: "PATCH", Path: "/api/v1/namespaces/x"}, mutation, false},
	}
	for _, tt := range tests {
		if got := kindOf(tt.open); got != tt.kind {
			t.Errorf("%s: kindOf = %v, want %v", tt.name, got, tt.kind)
		}
		if got := isWatch(tt.open); got != tt.watch {
			t.Errorf("%s: isWatch = %v, want %v", tt.name, got, tt.watch)
		}
	}
}

// frames feeds a replayBody as the gateway would.
type frames []*tetherv1.Frame

func (f *frames) Receive() (*tetherv1.Frame, error) {
	if len(*f) == 0 {
		return nil, io.EOF
	}
	next := (*f)[0]
	*f = (*f)[1:]
	return next, nil
}

func data(s string, end bool) *tetherv1.Frame {
	return &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: []byte(s), End: end}}}
}

func readAll(t *testing.T, b *replayBody) (string, error) {
	t.Helper()
	rd, err := b.reader()
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	for {
		chunk, err := rd.next(context.Background(), nil)
		if errors.Is(err, io.EOF) {
			return out.String(), nil
		}
		if err != nil {
			return out.String(), err
		}
		out.Write(chunk)
	}
}

func TestReplayBody(t *testing.T) {
	tests := []struct {
		name       string
		limit      int
		in         frames
		want       string
		wantErr    error
		replayable bool
	}{
		{"small body is kept", 100, frames{data("hello ", false), data("world", true)}, "hello world", nil, true},
		{"end alone", 100, frames{data("abc", false), data("", true)}, "abc", nil, true},
		{"over the limit is streamed once", 4, frames{data("hello ", false), data("world", true)}, "hello world", nil, false},
		{"broken off", 100, frames{data("abc", false)}, "abc", errBodyBroken, false},
		{"reset by the client", 100, frames{data("abc", false), {StreamId: 1, Kind: &tetherv1.Frame_Reset_{Reset_: &tetherv1.Reset{}}}}, "abc", errBodyBroken, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newReplayBody(tt.limit)
			in := tt.in
			b.fill(&in)
			got, err := readAll(t, b)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Fatalf("first read: %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
			if b.replayable() != tt.replayable {
				t.Fatalf("replayable = %v, want %v", b.replayable(), tt.replayable)
			}
			again, err := readAll(t, b)
			switch {
			case tt.replayable && (again != tt.want || err != nil):
				t.Fatalf("second read: %q, %v; want the same body", again, err)
			case !tt.replayable && tt.wantErr == nil && !errors.Is(err, errNotReplayable):
				t.Fatalf("second read of a body too large to keep: %q, %v", again, err)
			}
		})
	}
}

// A reader waits for chunks that have not arrived, and gives up when its
// attempt ends.
func TestReplayBodyWaits(t *testing.T) {
	b := newReplayBody(100)
	rd, err := b.reader()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		chunk, _ := rd.next(context.Background(), nil)
		got <- string(chunk)
	}()
	time.Sleep(10 * time.Millisecond)
	b.add([]byte("late"), false)
	if s := <-got; s != "late" {
		t.Fatalf("got %q", s)
	}
	stop := make(chan struct{})
	close(stop)
	if _, err := rd.next(context.Background(), stop); err == nil {
		t.Fatal("a reader whose attempt ended still waits")
	}
}

// The router's rule for a request whose attempt failed before its head.
func TestAgain(t *testing.T) {
	s := &Server{cfg: Config{NoAgentWait: time.Second, RetryWindow: 15 * time.Second}}
	s.epoch.Store(2)
	now := time.Now()
	get := &tetherv1.Open{Method: "GET", Path: "/api", End: true}
	post := &tetherv1.Open{Method: "POST", Path: "/api/v1/namespaces/d/configmaps"}
	exec := &tetherv1.Open{Method: "GET", Path: "/api/v1/namespaces/d/pods/p/exec", Upgrade: "websocket"}
	postFar := proto.Clone(post).(*tetherv1.Open)
	for i := range tunnel.MaxIDs {
		postFar.PreviousSessions = append(postFar.PreviousSessions, fmt.Sprintf("s%d", i))
	}
	lost := &tunnel.ResetError{Code: tetherv1.ResetCode_RESET_CODE_UNAVAILABLE}
	refused := &tunnel.ResetError{Code: tetherv1.ResetCode_RESET_CODE_REFUSED}
	canceled := &tunnel.ResetError{Code: tetherv1.ResetCode_RESET_CODE_CANCELED}
	acked := func(epoch uint64) *call {
		c := &call{epoch: epoch, answered: make(chan struct{})}
		c.answer("tether.sess.s1.3")
		return c
	}
	unacked := func(epoch uint64) *call { return &call{epoch: epoch, answered: make(chan struct{})} }
	tests := []struct {
		name    string
		open    *tetherv1.Open
		attempt uint32
		age     time.Duration
		c       *call
		err     error
		want    bool
	}{
		{"a read that lost its hop", get, 0, time.Second, unacked(2), lost, true},
		{"a read past the retry window", get, 0, 16 * time.Second, unacked(2), lost, false},
		{"a read the client gave up", get, 0, time.Second, unacked(2), canceled, false},
		{"refused: nothing ran", post, 0, 500 * time.Millisecond, acked(2), refused, true},
		{"refused, past the wait for an agent", post, 0, 2 * time.Second, acked(2), refused, false},
		{"refused again, within the retry window", post, 2, 10 * time.Second, acked(2), refused, true},
		{"a mutation whose stream is known", post, 0, time.Second, acked(2), lost, true},
		{"a mutation nobody took, link steady", post, 0, time.Second, unacked(2), lost, true},
		{"a mutation nobody took while the link dropped", post, 0, time.Second, unacked(1), lost, false},
		{"a mutation that reached as many streams as an Open can name", postFar, 64, time.Second, acked(2), lost, false},
		{"exec that lost its hop: it may have started", exec, 0, time.Second, acked(2), lost, false},
		{"exec refused", exec, 0, 500 * time.Millisecond, acked(2), refused, true},
	}
	for _, tt := range tests {
		open := proto.Clone(tt.open).(*tetherv1.Open)
		open.Attempt = tt.attempt
		r := &request{open: open, kind: kindOf(open), start: now.Add(-tt.age)}
		if got := s.again(r, tt.c, tt.err); got != tt.want {
			t.Errorf("%s: again = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestLetGo: the next attempt of a mutation names each agent stream an
// earlier one reached, once; other requests name none, as the agent reads
// them only for a mutation.
func TestLetGo(t *testing.T) {
	s := &Server{}
	attempt := func(session string) *call {
		c := &call{s: tunnel.NewStream(1, tunnel.SenderFunc(func(*tetherv1.Frame) error { return nil }), 0), answered: make(chan struct{})}
		if session != "" {
			c.answer("tether.sess." + session + ".3")
		}
		return c
	}
	tests := []struct {
		name     string
		open     *tetherv1.Open
		sessions []string // the stream each attempt reached; "" if none answered
		want     []string
	}{
		{"mutation", &tetherv1.Open{Method: "POST", Path: "/api"}, []string{"a", "", "b", "a"}, []string{"a", "b"}},
		{"read", &tetherv1.Open{Method: "GET", Path: "/api", End: true}, []string{"a", "b"}, nil},
	}
	for _, tt := range tests {
		r := &request{open: tt.open, kind: kindOf(tt.open)}
		for _, sess := range tt.sessions {
			s.letGo(r, attempt(sess), "again")
		}
		if !slices.Equal(r.open.PreviousSessions, tt.want) || r.open.Attempt != uint32(len(tt.sessions)) {
			t.Errorf("%s: previous sessions %v, attempt %d; want %v, %d", tt.name, r.open.PreviousSessions, r.open.Attempt, tt.want, len(tt.sessions))
		}
	}
}
