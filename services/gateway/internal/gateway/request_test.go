package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/services/gateway/internal/identity"
)

// oneUser authenticates every token as alice of tenant acme.
type oneUser struct{}

func (oneUser) Authenticate(context.Context, string) (identity.User, error) {
	return identity.User{Name: "alice", Groups: []string{"devs"}, Tenants: []string{"acme"}}, nil
}

// fakeRouter is a router that records the Opens it takes, and either fails
// them before any answer (as a router killed mid-request does) or answers
// 200.
type fakeRouter struct {
	tetherv1connect.UnimplementedProxyServiceHandler
	fail  bool
	mu    sync.Mutex
	opens []*tetherv1.Open
}

func (f *fakeRouter) took(o *tetherv1.Open) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens = append(f.opens, o)
}

func (f *fakeRouter) taken() []*tetherv1.Open {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens
}

func (f *fakeRouter) Call(_ context.Context, req *connect.Request[tetherv1.Frame], ss *connect.ServerStream[tetherv1.Frame]) error {
	f.took(req.Msg.GetOpen())
	if f.fail {
		return connect.NewError(connect.CodeUnavailable, errors.New("router went away"))
	}
	return ss.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, End: true, Body: []byte("ok")}}})
}

func (f *fakeRouter) Proxy(_ context.Context, bs *connect.BidiStream[tetherv1.Frame, tetherv1.Frame]) error {
	open, err := bs.Receive()
	if err != nil {
		return err
	}
	f.took(open.GetOpen())
	for {
		if _, err := bs.Receive(); err != nil {
			break
		}
	}
	if f.fail {
		return connect.NewError(connect.CodeUnavailable, errors.New("router went away"))
	}
	return bs.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, End: true}}})
}

// A read that one router fails before answering goes to the next, under
// the same request id and signed again for that hand-off, so the agent,
// which counts each router's tries from 0, never takes it for a replay. A
// mutation is never handed on: it may have run.
func TestARouterFailingARequestHandsOnOnlyReads(t *testing.T) {
	for _, tc := range []struct {
		name, method string
		body         string
		want         int // the client's status
		handedOn     bool
	}{
		{"a read", http.MethodGet, "", http.StatusOK, true},
		{"a mutation", http.MethodDelete, "", http.StatusServiceUnavailable, false},
		{"a mutation with a body", http.MethodPost, `{"kind":"ConfigMap"}`, http.StatusServiceUnavailable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dying, next := &fakeRouter{fail: true}, &fakeRouter{}
			g := newTestGateway(t)
			signer, verifier := testIdentityKeys(t)
			g.cfg.Identities, g.cfg.Auth = signer, oneUser{}
			g.cfg.Routers = nil
			for _, r := range []*fakeRouter{dying, next} {
				_, h := tetherv1connect.NewProxyServiceHandler(r)
				srv := httptest.NewUnstartedServer(h)
				srv.EnableHTTP2 = true
				srv.StartTLS()
				t.Cleanup(srv.Close)
				g.cfg.Routers = append(g.cfg.Routers, tetherv1connect.NewProxyServiceClient(srv.Client(), srv.URL))
			}
			g.down = make([]atomic.Int64, len(g.cfg.Routers))

			client := httptest.NewServer(g)
			defer client.Close()
			req, _ := http.NewRequest(tc.method, client.URL+"/clusters/dev/api/v1/namespaces/default/configmaps/x", strings.NewReader(tc.body))
			if tc.body == "" {
				req.Body = nil
			}
			req.Header.Set("Authorization", "Bearer t")
			resp, err := client.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			first := dying.taken()
			if len(first) != 1 {
				t.Fatalf("the first router took %d opens, want 1", len(first))
			}
			a, err := verifier.Verify(first[0].SignedIdentity, time.Now())
			if err != nil || a.GetHandoff() != 0 {
				t.Fatalf("first router's identity: handoff %d, %v", a.GetHandoff(), err)
			}
			second := next.taken()
			if !tc.handedOn {
				if len(second) != 0 {
					t.Fatalf("a %s was handed to the next router", tc.method)
				}
				return
			}
			if len(second) != 1 || second[0].RequestId != first[0].RequestId {
				t.Fatalf("the next router took %v, want the same request", second)
			}
			b, err := verifier.Verify(second[0].SignedIdentity, time.Now())
			if err != nil || b.GetHandoff() != 1 || b.GetRequestId() != first[0].RequestId {
				t.Fatalf("next router's identity: handoff %d, request %q, %v", b.GetHandoff(), b.GetRequestId(), err)
			}
		})
	}
}
