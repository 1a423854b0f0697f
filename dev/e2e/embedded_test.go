package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestEmbeddedRouter: a gateway that runs its router in its own process
// (--router-url=embedded) serves kubectl as one in front of separate
// routers does: reads, writes the cluster's RBAC decides, and an exec
// session, whose bytes go both ways over the in-process stream.
func TestEmbeddedRouter(t *testing.T) {
	if env.stack.EmbeddedGatewayURL == "" {
		t.Fatal("the e2e stack has no gateway with an embedded router")
	}
	server := "--server=" + env.stack.EmbeddedGatewayURL + "/clusters/dev"
	admin, alice := kubeconfig(t, "admin"), kubeconfig(t, "alice")
	ns := "e2e-embedded"
	must(t, admin, "", server, "create", "namespace", ns)
	t.Cleanup(func() { _, _, _ = kubectl(t, env.direct, "", "delete", "namespace", ns, "--wait=false") })
	must(t, admin, "", server, "create", "configmap", "through-embedded", "-n", ns, "--from-literal=k=v")
	if out := must(t, env.direct, "", "get", "configmap", "through-embedded", "-n", ns, "-o", "jsonpath={.data.k}"); out != "v" {
		t.Fatalf("the configmap made through the embedded router reads %q directly", out)
	}
	if _, errs, err := kubectl(t, alice, "", server, "get", "configmaps", "-n", ns); err == nil || !strings.Contains(errs, `User "alice"`) {
		t.Fatalf("alice without RBAC through the embedded router: %v %s", err, errs)
	}

	pod := sleeper(t)
	cfg := throughTether(t)
	cfg.Host = env.stack.EmbeddedGatewayURL + "/clusters/dev"
	for _, ex := range executors {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var out, errb bytes.Buffer
		err := execIn(ctx, t, cfg, ex, pod, strings.NewReader("ping\n"), &out, &errb, "cat")
		cancel()
		if err != nil || out.String() != "ping\n" {
			t.Fatalf("exec over %s through the embedded router: %v, stdout %q, stderr %q", ex.name, err, out.String(), errb.String())
		}
	}
}
