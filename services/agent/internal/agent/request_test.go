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
	a := newTestAgent(t)
	open := &tetherv1.Open{
		RequestId: "r1", ClusterId: "dev", Method: "GET", Path: "/api/v1/namespaces/a%2Fb/configmaps", Query: "limit=500&continue=x%3D",
		End: true,
		Headers: []*tetherv1.Header{
			{Name: "Accept", Values: []string{"application/vnd.kubernetes.protobuf"}},
			{Name: "Authorization", Values: []string{"Bearer stolen"}},
			{Name: "Impersonate-User", Values: []string{"system:admin"}},
			{Name: "impersonate-group", Values: []string{"system:masters"}},
			{Name: "Connection", Values: []string{"close"}},
			{Name: "Audit-ID", Values: []string{"chosen-by-the-client"}},
		},
	}
	id := &tetherv1.Identity{
		User: "alice", Uid: "u-1", Groups: []string{"devs", "system:authenticated"},
		Extra: map[string]*tetherv1.Values{"authentication.kubernetes.io/credential-id": {Values: []string{"JTI=abc"}}},
	}
	s := tunnel.NewStream(1, tunnel.SenderFunc(func(*tetherv1.Frame) error { return nil }), 0)
	req, err := a.request(context.Background(), open, id, s)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := req.URL.String(), "https://127.0.0.1:6443/prefix/api/v1/namespaces/a%2Fb/configmaps?limit=500&continue=x%3D"; got != want {
		t.Errorf("URL %s, want %s", got, want)
	}
	want := http.Header{
		"Accept": {"application/vnd.kubernetes.protobuf"},
		// The cluster's audit log names Tether's request id.
		"Audit-Id":          {"r1"},
		"Impersonate-User":  {"alice"},
		"Impersonate-Uid":   {"u-1"},
		"Impersonate-Group": {"devs", "system:authenticated"},
		"Impersonate-Extra-Authentication.kubernetes.io%2fcredential-Id": {"JTI=abc"},
	}
	if !reflect.DeepEqual(req.Header, want) {
		t.Errorf("headers\n got %v\nwant %v", req.Header, want)
	}
	if req.ContentLength != 0 {
		t.Errorf("ContentLength %d for a request without a body", req.ContentLength)
	}
}

func TestRequestWithoutIdentityIsRefused(t *testing.T) {
	a := newTestAgent(t)
	s := tunnel.NewStream(1, tunnel.SenderFunc(func(*tetherv1.Frame) error { return nil }), 0)
	_, err := a.request(context.Background(), &tetherv1.Open{RequestId: "r", ClusterId: "dev", Method: "GET", Path: "/api", End: true}, nil, s)
	if err == nil {
		t.Fatal("built a request with no identity: it would run with the agent's own rights")
	}
}
