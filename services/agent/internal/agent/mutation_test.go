package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/kstatus"
	"github.com/tether-dev/tether/lib/tunnel"
)

// TestMutationFromAnotherProcessIsNotRunAgain: a retry whose earlier
// attempt went to a session this process never had may have run there, so
// it is answered with a Status a client may retry, and never reaches the
// kube-apiserver.
func TestMutationFromAnotherProcessIsNotRunAgain(t *testing.T) {
	called := false
	a := newTestAgentWith(t, roundTripFunc(func(*http.Request) (*http.Response, error) {
		called = true
		return nil, errors.New("must not be called")
	}))
	a.sessions.add("this-process")
	var mu sync.Mutex
	var sent []*tetherv1.Frame
	s := tunnel.NewStream(1, tunnel.SenderFunc(func(f *tetherv1.Frame) error {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, f)
		return nil
	}), 0)
	open := &tetherv1.Open{
		RequestId: "r1", ClusterId: "dev", Method: "POST", Path: "/api/v1/namespaces/default/configmaps", End: true, Window: 1 << 16,
		Attempt: 1, PreviousSessions: []string{"this-process", "another-process"},
	}
	if err := s.Deliver(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: open}}); err != nil {
		t.Fatal(err)
	}
	a.serveMutation(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), s, open, caller{user: &tetherv1.Identity{User: "alice"}})

	if called {
		t.Fatal("the mutation was run again")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 || sent[0].GetResponse() == nil {
		t.Fatalf("sent %v, want one response", sent)
	}
	r := sent[0].GetResponse()
	h := http.Header{}
	tunnel.ToHTTP(r.Headers, h, nil)
	if r.Status != http.StatusServiceUnavailable || !r.End || h.Get("Retry-After") != "1" || h.Get("Content-Type") != "application/json" {
		t.Fatalf("response %d end=%v headers %v", r.Status, r.End, h)
	}
	var st kstatus.Status
	if err := json.Unmarshal(r.Body, &st); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
	if st.Kind != "Status" || st.Code != 503 || st.Reason != "ServiceUnavailable" || st.Details == nil || st.Details.RetryAfterSeconds != 1 {
		t.Fatalf("status %+v", st)
	}

	// The request id is not taken: a retry that reaches the process it
	// first went to still runs it.
	if o, first := a.memory.begin("r1"); !first {
		t.Fatalf("request id still held: %+v", o)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
