package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
)

// status is what a Kubernetes Status body carries.
type status struct {
	Kind    string `json:"kind"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	Code    int    `json:"code"`
}

// call sends a raw request to the gateway.
func call(t *testing.T, method, path, token string, hdr http.Header, body io.Reader) *http.Response {
	t.Helper()
	c := gatewayClient(t)
	req, err := http.NewRequest(method, env.stack.GatewayURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// sharedClient is call's client: one set of connections to the gateway,
// which footprint checks close before they count (expectBack).
var sharedClient struct {
	sync.Mutex
	c *http.Client
}

func gatewayClient(t *testing.T) *http.Client {
	t.Helper()
	sharedClient.Lock()
	defer sharedClient.Unlock()
	if sharedClient.c == nil {
		c, err := env.stack.HTTPClient()
		if err != nil {
			t.Fatal(err)
		}
		sharedClient.c = c
	}
	return sharedClient.c
}

func closeIdleGatewayConns() {
	sharedClient.Lock()
	defer sharedClient.Unlock()
	if sharedClient.c != nil {
		sharedClient.c.CloseIdleConnections()
	}
}

func token(user string) string { return env.stack.Users[user].Token }

func TestRefusalsAreKubernetesStatus(t *testing.T) {
	tests := []struct {
		name   string
		path   string
		token  string
		code   int
		reason string
		msg    string
	}{
		{"no token", "/clusters/dev/api", "", 401, "Unauthorized", ""},
		{"wrong token", "/clusters/dev/api", "not-a-token", 401, "Unauthorized", ""},
		{"unknown cluster", "/clusters/nope/api", token("admin"), 404, "NotFound", `cluster "nope" not found`},
		{"another tenant's cluster", "/clusters/dev/api", token("mallory"), 404, "NotFound", `cluster "dev" not found`},
		{"no agent connected", "/clusters/" + noAgentCluster + "/api", token("admin"), 503, "ServiceUnavailable", noAgentCluster},
		{"wildcard in cluster id", "/clusters/%2A/api", token("admin"), 404, "NotFound", ""},
		{"dot segment", "/clusters/dev/api/../../clusters/other/api", token("admin"), 400, "BadRequest", ""},
		{"not under /clusters", "/api/v1/namespaces", token("admin"), 404, "NotFound", ""},
		// Another tenant's user, trying every way around the id.
		{"other tenant, encoded slashes", "/clusters/dev%2F..%2Fdev/api", token("mallory"), 404, "NotFound", ""},
		{"other tenant, climbing", "/clusters/globex/../dev/api", token("mallory"), 400, "BadRequest", ""},
		{"other tenant, second /clusters/", "/clusters/globex/clusters/dev/api", token("mallory"), 404, "NotFound", `cluster "globex" not found`},
		{"other tenant, NATS wildcard", "/clusters/%3E/api", token("mallory"), 404, "NotFound", ""},
		{"other tenant, NATS separator", "/clusters/dev.x/api", token("mallory"), 404, "NotFound", ""},
		{"other tenant, space", "/clusters/dev%20/api", token("mallory"), 404, "NotFound", ""},
		{"other tenant, 300 characters", "/clusters/" + strings.Repeat("d", 300) + "/api", token("mallory"), 404, "NotFound", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := call(t, "GET", tt.path, tt.token, nil, nil)
			defer resp.Body.Close()
			var st status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatalf("body is not a Status: %v", err)
			}
			if resp.StatusCode != tt.code || st.Code != tt.code || st.Kind != "Status" || st.Reason != tt.reason || !strings.Contains(st.Message, tt.msg) {
				t.Fatalf("got %d %+v, want %d %s containing %q", resp.StatusCode, st, tt.code, tt.reason, tt.msg)
			}
			if tt.code == 503 && resp.Header.Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		})
	}
}

// TestRawImpersonateHeadersAreCheckedByTheCluster: Impersonate-* headers
// sent by hand never reach the cluster as such; they mean what kubectl --as
// means, and the cluster decides whether the caller may (ADR 011).
func TestRawImpersonateHeadersAreCheckedByTheCluster(t *testing.T) {
	for _, tc := range []struct {
		hdr  http.Header
		want string
	}{
		{http.Header{"Impersonate-User": {"admin"}}, `users "admin" is forbidden: User "alice" cannot impersonate resource "users"`},
		{http.Header{"Impersonate-User": {"admin"}, "Impersonate-Group": {"system:masters"}}, `does not impersonate "system:masters"`},
	} {
		resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/kube-system/secrets", token("alice"), tc.hdr, nil)
		var st status
		_ = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(st.Message, tc.want) {
			t.Fatalf("%v: got %d %+v, want a 403 saying %q", tc.hdr, resp.StatusCode, st, tc.want)
		}
	}
}

func TestProtobufAndGzipPassThrough(t *testing.T) {
	hdr := http.Header{"Accept": {"application/vnd.kubernetes.protobuf"}, "Accept-Encoding": {"gzip"}}
	// Large enough that the kube-apiserver compresses it.
	must(t, env.direct, "", "create", "namespace", "e2e-proto")
	t.Cleanup(func() { _, _, _ = kubectl(t, env.direct, "", "delete", "namespace", "e2e-proto", "--wait=false") })
	if err := createConfigMaps(t, "e2e-proto", 300, 1024); err != nil {
		t.Fatal(err)
	}
	c, err := env.stack.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", env.stack.GatewayURL+"/clusters/dev/api/v1/namespaces/e2e-proto/configmaps", nil)
	req.Header = hdr
	req.Header.Set("Authorization", "Bearer "+token("admin"))
	resp, err := c.Transport.RoundTrip(req) // RoundTrip: no transparent gunzip
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.kubernetes.protobuf" {
		t.Fatalf("Content-Type %q", ct)
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" || !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		t.Fatalf("Content-Encoding %q, body starts %x: gzip did not pass through", ce, body[:min(4, len(body))])
	}
}

// createConfigMaps creates n configmaps of size bytes directly in the
// kube-apiserver, with a few requests at a time.
func createConfigMaps(t *testing.T, ns string, n, size int) error {
	t.Helper()
	cp := env.stack.Kube
	pem, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	value := strings.Repeat("x", size)
	work := make(chan int)
	errc := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				body := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-%05d"},"data":{"v":%q}}`, i, value)
				req, _ := http.NewRequest("POST", cp.URL+"/api/v1/namespaces/"+ns+"/configmaps", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+cp.AdminToken)
				req.Header.Set("Content-Type", "application/json")
				resp, err := c.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						err = fmt.Errorf("creating cm-%05d: %s", i, resp.Status)
					}
				}
				if err != nil {
					select { // keep the first error; keep taking work so the sender never blocks
					case errc <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errc)
	return <-errc
}

// openWatch starts a watch on configmaps in default through the gateway and
// returns its body; ctx ends it.
func openWatch(t *testing.T, ctx context.Context) io.ReadCloser {
	t.Helper()
	c, err := env.stack.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", env.stack.GatewayURL+"/clusters/dev/api/v1/namespaces/default/configmaps?watch=1", nil)
	req.Header.Set("Authorization", "Bearer "+token("admin"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("watch: %s", resp.Status)
	}
	return resp.Body
}

// TestIdentityCheckedByMACOnceTheGatewayKnowsTheAgent: after a cluster's
// first answer through a gateway, which announces its agent's key, the
// agent checks the identities that gateway signs by their MAC, not their
// signature (ADR 011, item 7): through the real router, NATS and
// subscriber, which pass both unchanged.
func TestIdentityCheckedByMACOnceTheGatewayKnowsTheAgent(t *testing.T) {
	get := func() {
		resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/default/configmaps?limit=1", token("admin"), nil, nil)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
	}
	get() // the gateway learns the agent's key, if it had not yet
	macs := gauge(t, "agent", `tether_agent_identity_checks_total{by="mac"}`)
	sigs := gauge(t, "agent", `tether_agent_identity_checks_total{by="signature"}`)
	const n = 10
	for range n {
		get()
	}
	gotMAC := gauge(t, "agent", `tether_agent_identity_checks_total{by="mac"}`) - macs
	gotSig := gauge(t, "agent", `tether_agent_identity_checks_total{by="signature"}`) - sigs
	// Each gateway instance learns the key on its first answer: at most
	// one signature check per gateway.
	if gotMAC < n-2 || gotMAC+gotSig < n {
		t.Fatalf("of %d requests, %v were checked by MAC and %v by signature", n, gotMAC, gotSig)
	}
}
