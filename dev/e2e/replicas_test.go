package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-dev/tether/dev/stack"
)

// With two of each gateway, router and subscriber, and the agent holding a
// stream to each subscriber, a request reaches the agent whichever gateway
// and router it enters through: NATS interest on the cluster's subject
// finds a subscriber that holds a stream, and requests spread over both;
// nothing is sticky.
func TestAnyReplicaReachesTheAgent(t *testing.T) {
	if len(env.stack.GatewayURLs) < 2 {
		t.Fatalf("the e2e stack runs %d gateway(s); this test needs two", len(env.stack.GatewayURLs))
	}
	client := gatewayClient(t)
	served := func() float64 {
		v, _ := metric(t, "router-1", `tether_router_requests_total{code="200"}`)
		return v
	}
	before := served()
	relayed := func(sub string) float64 {
		v, _ := metric(t, sub, `tether_subscriber_requests_total{outcome="ok"}`)
		return v
	}
	before0, before1 := relayed("subscriber"), relayed("subscriber-1")
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
	if gauge(t, "subscriber", "tether_agent_streams") != 1 || gauge(t, "subscriber-1", "tether_agent_streams") != 1 {
		t.Fatal("the agent does not hold one stream to each subscriber")
	}
	// 40 requests land on one of two streams each: both serve (all on one
	// would happen once in 2^39 runs).
	if relayed("subscriber") == before0 || relayed("subscriber-1") == before1 {
		t.Fatalf("requests did not spread over the agent's streams: subscriber-0 relayed %v, subscriber-1 %v",
			relayed("subscriber")-before0, relayed("subscriber-1")-before1)
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
