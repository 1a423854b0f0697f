package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
)

func newTestAgent(t *testing.T) *Agent {
	t.Helper()
	return newTestAgentWith(t, http.DefaultTransport)
}

// newTestAgentWith is an agent whose kube-apiserver calls go to api.
func newTestAgentWith(t *testing.T, api http.RoundTripper) *Agent {
	t.Helper()
	_, verifier := newIdentityKeys(t)
	a, err := New(Config{
		Admission: Admission{Verifier: verifier, Tenant: "acme"},
		ClusterID: "dev", SubscriberURLs: []string{"http://127.0.0.1:1"}, Subscriber: http.DefaultClient,
		APIServer: "https://127.0.0.1:6443/prefix", APITransport: api, Credentials: &Credentials{},
		Instruments: telemetry.Instruments{
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
			Tracer: noop.NewTracerProvider().Tracer(""), Propagator: propagation.TraceContext{},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestRequestCarriesTheUserNotTheClientsClaims(t *testing.T) {
	open := &tetherv1.Open{
		RequestId: "r1", ClusterId: "dev", Method: "GET", Path: "/api/v1/namespaces/a%2Fb/configmaps", Query: "limit=500&continue=x%3D",
		End: true,
		Headers: []*tetherv1.Header{
			{Name: "Accept", Values: []string{"application/vnd.kubernetes.protobuf"}},
			{Name: "Authorization", Values: []string{"Bearer stolen"}},
			{Name: "Impersonate-User", Values: []string{"system:admin"}},
			{Name: "impersonate-group", Values: []string{"system:masters"}},
			// What a kube-apiserver behind a front proxy would believe.
			{Name: "X-Remote-User", Values: []string{"system:admin"}},
			{Name: "x-remote-group", Values: []string{"system:masters"}},
			{Name: "X-Remote-Extra-Scopes", Values: []string{"all"}},
			{Name: "X-Tenant-User", Values: []string{"system:admin"}},
			{Name: "X-Forwarded-Groups", Values: []string{"system:masters"}},
			{Name: "Connection", Values: []string{"close"}},
			{Name: "Audit-ID", Values: []string{"chosen-by-the-client"}},
		},
	}
	alice := &tetherv1.Identity{
		User: "alice", Uid: "u-1", Groups: []string{"devs", "system:authenticated"},
		Extra: map[string]*tetherv1.Values{"authentication.kubernetes.io/credential-id": {Values: []string{"JTI=abc"}}},
	}
	bob := &tetherv1.Identity{User: "bob", Groups: []string{"ops"}}
	// A provider's own header names: the client's under those names go too.
	custom := &FrontProxy{UserHeaders: []string{"X-Tenant-User", "X-Forwarded-User"}, GroupHeaders: []string{"X-Tenant-Group", "X-Forwarded-Groups"}, ExtraPrefixes: []string{"X-Tenant-Extra-"}}
	defaults := DefaultFrontProxy()
	common := http.Header{"Accept": {"application/vnd.kubernetes.protobuf"}, "Audit-Id": {"r1"}}
	for _, tc := range []struct {
		name string
		fp   *FrontProxy
		who  caller
		want http.Header
	}{
		{"impersonation", nil, caller{user: alice}, http.Header{
			"Impersonate-User":  {"alice"},
			"Impersonate-Uid":   {"u-1"},
			"Impersonate-Group": {"devs", "system:authenticated"},
			"Impersonate-Extra-Authentication.kubernetes.io%2fcredential-Id": {"JTI=abc"},
		}},
		{"impersonation, as whom the user asked", nil, caller{user: alice, as: bob}, http.Header{
			"Impersonate-User": {"bob"}, "Impersonate-Group": {"ops"},
		}},
		{"front proxy", &defaults, caller{user: alice}, http.Header{
			"X-Remote-User":  {"alice"},
			"X-Remote-Uid":   {"u-1"},
			"X-Remote-Group": {"devs", "system:authenticated"},
			"X-Remote-Extra-Authentication.kubernetes.io%2fcredential-Id": {"JTI=abc"},
		}},
		{"front proxy, as whom the user asked: the kube-apiserver authorizes it", &defaults, caller{user: alice, as: bob}, http.Header{
			"X-Remote-User":  {"alice"},
			"X-Remote-Uid":   {"u-1"},
			"X-Remote-Group": {"devs", "system:authenticated"},
			"X-Remote-Extra-Authentication.kubernetes.io%2fcredential-Id": {"JTI=abc"},
			"Impersonate-User":  {"bob"},
			"Impersonate-Group": {"ops"},
		}},
		{"front proxy with its own header names", custom, caller{user: bob}, http.Header{
			"X-Tenant-User": {"bob"}, "X-Tenant-Group": {"ops"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newTestAgent(t)
			a.cfg.FrontProxy = tc.fp
			s := tunnel.NewStream(1, tunnel.SenderFunc(func(*tetherv1.Frame) error { return nil }), 0)
			req, err := a.request(context.Background(), open, tc.who, s)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := req.URL.String(), "https://127.0.0.1:6443/prefix/api/v1/namespaces/a%2Fb/configmaps?limit=500&continue=x%3D"; got != want {
				t.Errorf("URL %s, want %s", got, want)
			}
			want := common.Clone()
			if tc.fp != custom {
				// Only a header the kube-apiserver is said to read claims anything.
				want["X-Tenant-User"] = []string{"system:admin"}
				want["X-Forwarded-Groups"] = []string{"system:masters"}
			}
			for k, v := range tc.want {
				want[k] = v
			}
			if !reflect.DeepEqual(req.Header, want) {
				t.Errorf("headers\n got %v\nwant %v", req.Header, want)
			}
			if req.ContentLength != 0 {
				t.Errorf("ContentLength %d for a request without a body", req.ContentLength)
			}
		})
	}
}

func TestFrontProxyNeedsHeaderNames(t *testing.T) {
	for _, fp := range []FrontProxy{{}, {UserHeaders: []string{"X-Remote-User"}}, {UserHeaders: []string{"X Remote"}, GroupHeaders: []string{"X-G"}, ExtraPrefixes: []string{"X-E-"}}} {
		if err := fp.validate(); err == nil {
			t.Errorf("%+v taken", fp)
		}
	}
	defaults := DefaultFrontProxy()
	if err := defaults.validate(); err != nil {
		t.Error(err)
	}
}

func TestRequestWithoutIdentityIsRefused(t *testing.T) {
	alice := &tetherv1.Identity{User: "alice"}
	for _, who := range []caller{{}, {as: alice}, {user: alice, as: &tetherv1.Identity{}}, {user: alice, as: &tetherv1.Identity{Groups: []string{"ops"}}}} {
		defaults := DefaultFrontProxy()
		for _, fp := range []*FrontProxy{nil, &defaults} {
			a := newTestAgent(t)
			a.cfg.FrontProxy = fp
			s := tunnel.NewStream(1, tunnel.SenderFunc(func(*tetherv1.Frame) error { return nil }), 0)
			if _, err := a.request(context.Background(), &tetherv1.Open{RequestId: "r", ClusterId: "dev", Method: "GET", Path: "/api", End: true}, who, s); err == nil {
				// An empty Impersonate-User is no impersonation: the agent's own rights.
				t.Errorf("built a request for %v (front proxy %v): it would run with the agent's own rights", who, fp != nil)
			}
		}
	}
}
