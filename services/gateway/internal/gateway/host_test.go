package gateway

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/services/gateway/internal/identity"
)

func testHosts(t testing.TB) ClusterHosts {
	t.Helper()
	// Nested on purpose: the inner domain must win.
	h, err := NewClusterHosts([]string{"tether.localhost", "K8S.Example.com", "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestClusterHostsCluster(t *testing.T) {
	tests := []struct {
		host    string
		cluster string
		wantErr error
	}{
		{"dev.tether.localhost", "dev", nil},
		{"dev.tether.localhost:8443", "dev", nil},
		{"DEV.Tether.LocalHost:8443", "dev", nil},
		{"dev.tether.localhost.", "dev", nil},
		{"dev.tether.localhost.:443", "dev", nil},
		{"a-1.k8s.example.com", "a-1", nil},
		{"prod.example.com", "prod", nil},
		// The gateway's own name, and names that are not below a domain.
		{"tether.localhost", "", errNotClusterHost},
		{"tether.localhost:8443", "", errNotClusterHost},
		{"k8s.example.com", "", errNotClusterHost},
		{"devtether.localhost", "", errNotClusterHost},
		{"dev.tether.localhost.evil.com", "", errNotClusterHost},
		{"dev-tether.localhost", "", errNotClusterHost},
		{"127.0.0.1:8443", "", errNotClusterHost},
		{"[::1]:8443", "", errNotClusterHost},
		{"localhost", "", errNotClusterHost},
		{"", "", errNotClusterHost},
		{"dev.tether.localhost:", "", errNotClusterHost},
		{"dev.tether.localhost:84a3", "", errNotClusterHost},
		{"dev.tether.localhost:123456", "", errNotClusterHost},
		// The Kelvin sign lowers to k in Unicode; it is not ASCII.
		{"\u212aube.tether.localhost", "", errNotClusterHost},
		// Below a domain, but not one cluster id.
		{".tether.localhost", "", errNotFound},
		{"a.b.tether.localhost", "", errNotFound},
		{"x.dev.k8s.example.com", "", errNotFound},
		{"-dev.tether.localhost", "", errNotFound},
		{"dev_1.tether.localhost", "", errNotFound},
		{"*.tether.localhost", "", errNotFound},
		{">.tether.localhost", "", errNotFound},
		{"dev%2e.tether.localhost", "", errNotFound},
		{strings.Repeat("a", 64) + ".tether.localhost", "", errNotFound},
		{"xn--dv-fka.tether.localhost", "xn--dv-fka", nil},
	}
	h := testHosts(t)
	for _, tt := range tests {
		cluster, err := h.Cluster(tt.host)
		if !errors.Is(err, tt.wantErr) || cluster != tt.cluster {
			t.Errorf("Cluster(%q) = %q, %v; want %q, %v", tt.host, cluster, err, tt.cluster, tt.wantErr)
		}
	}
	if c, err := (ClusterHosts{}).Cluster("dev.tether.localhost"); !errors.Is(err, errNotClusterHost) {
		t.Errorf("without domains: %q, %v", c, err)
	}
}

func TestNewClusterHostsRefusesBadDomains(t *testing.T) {
	for _, d := range []string{"", ".tether.localhost", "tether.localhost.", "*.tether.localhost", "tether..localhost", "tether.localhost:8443", "tëther.localhost", "-a.com", "a_b.com", strings.Repeat("a.", 130) + "com"} {
		if _, err := NewClusterHosts([]string{"ok.example", d}); err == nil {
			t.Errorf("NewClusterHosts accepted %q", d)
		}
	}
}

// TestHostAndPathMakeTheSameEnvelope: the router and the agent cannot tell
// how the cluster was addressed.
func TestHostAndPathMakeTheSameEnvelope(t *testing.T) {
	g := &Gateway{cfg: Config{Hosts: testHosts(t)}}
	user := identity.User{Name: "ann", UID: "u1", Groups: []string{"g"}, Tenants: []string{"acme"}, Extra: map[string][]string{"k": {"v"}}}
	for _, target := range []string{
		"/api/v1/namespaces/default/pods?watch=true&resourceVersion=5",
		"/",
		"/openapi/v3",
		"/api/v1/namespaces/a%2Fb/configmaps",
		"/clusters/other/api",
		"/tether.v1.ClusterService/ListClusters",
	} {
		byHost := httptest.NewRequest("POST", "https://dev.tether.localhost:8443"+target, strings.NewReader("{}"))
		byPath := httptest.NewRequest("POST", "https://127.0.0.1:8443/clusters/dev"+target, strings.NewReader("{}"))
		for _, r := range []*http.Request{byHost, byPath} {
			r.Header.Set("Accept", "application/json")
			r.Header.Set("Content-Type", "application/json")
		}
		if !g.ByHost(byHost) || g.ByHost(byPath) {
			t.Fatalf("%s: ByHost %v for the host, %v for the path", target, g.ByHost(byHost), g.ByHost(byPath))
		}
		var opens []proto.Message
		for _, r := range []*http.Request{byHost, byPath} {
			cluster, rest, err := g.target(r)
			if err != nil {
				t.Fatalf("%s %s: %v", r.Host, target, err)
			}
			open := newOpen(r, "req-1", cluster, rest, user, false)
			// Headers come out of a map, in any order.
			slices.SortFunc(open.Headers, func(a, b *tetherv1.Header) int { return strings.Compare(a.Name, b.Name) })
			opens = append(opens, open)
		}
		if !proto.Equal(opens[0], opens[1]) {
			t.Errorf("%s: by host %v\nby path %v", target, opens[0], opens[1])
		}
	}
}

func TestTargetByHostRefuses(t *testing.T) {
	g := &Gateway{cfg: Config{Hosts: testHosts(t)}}
	tests := []struct {
		host, target string
		wantErr      error
	}{
		{"dev.tether.localhost", "/api/../../x", errDotSegment},
		{"dev.tether.localhost", "/api/%2E%2e/x", errDotSegment},
		{"a.b.tether.localhost", "/api", errNotFound},
		{"dev.tether.localhost", "*", errNotFound},
		// Neither: the path decides, as without host names.
		{"127.0.0.1", "/api", errNotFound},
		{"tether.localhost", "/clusters/dev/api/..", errDotSegment},
	}
	for _, tt := range tests {
		var r *http.Request
		if tt.target == "*" {
			r = httptest.NewRequest("OPTIONS", "*", nil)
		} else {
			r = httptest.NewRequest("GET", tt.target, nil)
		}
		r.Host = tt.host
		if _, _, err := g.target(r); !errors.Is(err, tt.wantErr) {
			t.Errorf("%s %s: %v, want %v", tt.host, tt.target, err, tt.wantErr)
		}
	}
}

// FuzzClusterHost: whatever the Host, an accepted one names a valid cluster
// that is its first label, below a configured domain, and the same cluster
// the path form names.
func FuzzClusterHost(f *testing.F) {
	for _, s := range []string{"dev.tether.localhost", "DEV.tether.localhost:8443", "a.b.tether.localhost", "tether.localhost", "[::1]:1", "dev.tether.localhost.", "\u212a.tether.localhost", "x.k8s.example.com"} {
		f.Add(s)
	}
	h := testHosts(f)
	f.Fuzz(func(t *testing.T, host string) {
		cluster, err := h.Cluster(host)
		if err != nil {
			if !errors.Is(err, errNotFound) && !errors.Is(err, errNotClusterHost) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !subject.ValidClusterID(cluster) {
			t.Fatalf("accepted cluster %q from %q", cluster, host)
		}
		name, _, _ := strings.Cut(strings.ToLower(host), ":")
		name = strings.TrimSuffix(name, ".")
		label, domain, _ := strings.Cut(name, ".")
		if label != cluster || !(domain == "tether.localhost" || domain == "k8s.example.com" || domain == "example.com") {
			t.Fatalf("host %q gave cluster %q", host, cluster)
		}
		if c, _, err := ParsePath("/clusters/" + cluster + "/api"); err != nil || c != cluster {
			t.Fatalf("path form of %q: %q, %v", cluster, c, err)
		}
	})
}
