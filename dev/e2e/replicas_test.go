package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-dev/tether/dev/stack"
)

// With two of each gateway, router and subscriber and the agent on
// subscriber-0, a request reaches the agent whichever gateway and router it
// enters through: NATS interest on the cluster's subject finds the
// subscriber that holds the stream; nothing is sticky.
func TestAnyReplicaReachesTheAgent(t *testing.T) {
	if len(env.stack.GatewayURLs) < 2 {
		t.Fatalf("the e2e stack runs %d gateway(s); this test needs two", len(env.stack.GatewayURLs))
	}
	client := gatewayClient(t)
	served := func() float64 {
		v, _ := metric(t, "router-1", `tether_router_requests_total{cluster="dev",code="200"}`)
		return v
	}
	before := served()
	for i, gw := range env.stack.GatewayURLs {
		for range 20 {
			req, _ := http.NewRequest(http.MethodGet, gw+"/clusters/"+stack.ClusterID+"/api/v1/namespaces/default", nil)
			req.Header.Set("Authorization", "Bearer "+token("admin"))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("through gateway %d: %d", i, resp.StatusCode)
			}
		}
		// kubectl too, through this gateway.
		kc := strings.Replace(must(t, kubeconfig(t, "admin"), "", "config", "view", "--raw", "--minify", "-o", "json"), env.stack.GatewayURL, gw, 1)
		if out := must(t, writeTemp(t, kc), "", "get", "ns", "default", "-o", "name"); strings.TrimSpace(out) != "namespace/default" {
			t.Fatalf("kubectl through gateway %d: %s", i, out)
		}
	}
	if after := served(); after < before+20 {
		t.Fatalf("router-1 served %v requests, want at least 20", after-before)
	}
	if gauge(t, "subscriber-1", "tether_agent_streams") != 0 {
		t.Fatal("the agent holds a stream to subscriber-1 too; this test assumes one stream, on subscriber-0")
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
