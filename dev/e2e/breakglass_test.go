package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/dev/proc"
	"github.com/tether-dev/tether/dev/stack"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// startOwnAgent starts an agent of tenant acme's cluster with args beside
// its identity flags, and returns it and its admin address; ready waits
// until it holds a stream.
func startOwnAgent(t *testing.T, name string, ready bool, args ...string) (*proc.Process, string) {
	t.Helper()
	ports, err := proc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	admin := "127.0.0.1:" + strconv.Itoa(ports[0])
	p, err := proc.Start(name, env.stack.Bin("agent"), filepath.Join(t.TempDir(), "logs"), nil,
		append(append(env.stack.AgentIdentityArgs("acme"), "--subscriber-ca", env.stack.CAFile, "--kubeconfig", env.stack.AgentKubeconfig,
			"--admin-addr", admin), args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(10 * time.Second) })
	if ready {
		waitReady(t, p, admin, 30*time.Second)
	}
	return p, admin
}

// waitReady waits until the process p, whose admin address is admin, is
// ready, failing the test if it exits first.
func waitReady(t *testing.T, p *proc.Process, admin string, within time.Duration) {
	t.Helper()
	waitFor(t, within, func() bool {
		if p.Exited() {
			t.Fatalf("%s exited: %v", admin, p.ExitError())
		}
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// TestBreakGlass: an OIDC user in the platform's break-glass group
// (system:masters, let through by the gateway by name) is refused by an
// agent whose cluster does not allow it, and served, and counted, by one
// whose cluster does (ADR 011).
func TestBreakGlass(t *testing.T) {
	const cluster = "e2e-breakglass"
	bootstrap := createCluster(t, cluster, "acme")
	t.Cleanup(func() {
		_, _ = env.stack.Clusters().DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: cluster}))
	})
	dir := t.TempDir()
	btFile := filepath.Join(dir, "bootstrap-token")
	if err := os.WriteFile(btFile, []byte(bootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	_, admin := startOwnAgent(t, "agent-"+cluster, true, "--cluster-id", cluster, "--subscriber-url", env.stack.SubscriberURL,
		"--bootstrap-token-file", btFile, "--credential-file", filepath.Join(dir, "credential"), "--allow-system-names", stack.BreakGlassGroup)

	root := mustOIDC(t, "root", t.TempDir())
	refusedBefore, _ := env.stack.Metric("agent", `tether_agent_requests_refused_total{reason="system_name"}`)
	// system:masters would pass the cluster's RBAC: a 403 is the agent's.
	_, errs, err := kubectl(t, root, "", "get", "secrets", "-n", "kube-system")
	if err == nil || !strings.Contains(errs, "Forbidden") {
		t.Fatalf("cluster dev served the break-glass group it does not allow: %v %s", err, errs)
	}
	if n, _ := env.stack.Metric("agent", `tether_agent_requests_refused_total{reason="system_name"}`); n <= refusedBefore {
		t.Fatalf("dev's agent counted no refusal of a system name (%v, before %v)", n, refusedBefore)
	}
	server := strings.TrimSuffix(env.stack.GatewayURL, "/") + "/clusters/" + cluster
	must(t, root, "", "get", "secrets", "-n", "kube-system", "--server", server)
	if n, ok := metricAt(t, admin, "tether_agent_privileged_requests_total"); !ok || n < 1 {
		t.Fatalf("the break-glass request was not counted: %v %v", n, ok)
	}
}

func metricAt(t *testing.T, admin, name string) (float64, bool) {
	t.Helper()
	return stack.MetricAt("http://"+admin+"/metrics", name)
}
