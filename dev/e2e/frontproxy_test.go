package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// TestFrontProxyIdentity: an agent in front-proxy mode names users to the
// kube-apiserver in its --requestheader-* headers, with the front proxy's
// client certificate, instead of impersonating them (ADR 017). The
// cluster's RBAC decides for the user as before; the audit log shows the
// user authenticated, not impersonated; kubectl --as is the
// kube-apiserver's to allow; and a client's own X-Remote-* headers claim
// nothing.
func TestFrontProxyIdentity(t *testing.T) {
	const cluster, ns = "e2e-front-proxy", "e2e-front-proxy"
	bootstrap := createCluster(t, cluster, "acme")
	t.Cleanup(func() {
		_, _ = env.stack.Clusters().DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: cluster}))
		_, _, _ = kubectl(t, env.direct, "", "delete", "namespace", ns, "--wait=false")
	})
	dir := t.TempDir()
	btFile := filepath.Join(dir, "bootstrap-token")
	if err := os.WriteFile(btFile, []byte(bootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	startOwnAgent(t, "agent-"+cluster, true, "--cluster-id", cluster, "--subscriber-url", env.stack.SubscriberURL,
		"--bootstrap-token-file", btFile, "--credential-file", filepath.Join(dir, "credential"),
		"--identity-mode", "front-proxy", "--front-proxy-cert", env.stack.Kube.FrontProxyCert, "--front-proxy-key", env.stack.Kube.FrontProxyKey)
	alice, err := env.stack.KubeconfigFor("alice-front-proxy", token("alice"), cluster)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := env.stack.KubeconfigFor("admin-front-proxy", token("admin"), cluster)
	if err != nil {
		t.Fatal(err)
	}
	must(t, env.direct, "", "create", "namespace", ns)

	// The cluster's RBAC, to alice's name.
	_, errs, err := kubectl(t, alice, "", "get", "configmaps", "-n", ns)
	if err == nil || !strings.Contains(errs, "Forbidden") || !strings.Contains(errs, `User "alice"`) {
		t.Fatalf("alice without RBAC: err=%v stderr=%s", err, errs)
	}
	must(t, env.direct, "", "create", "rolebinding", "devs-edit", "-n", ns, "--clusterrole=edit", "--group=acme:developers")
	waitFor(t, 30*time.Second, func() bool {
		_, _, err := kubectl(t, alice, "", "get", "configmaps", "-n", ns)
		return err == nil
	})
	must(t, alice, "", "create", "configmap", "made-by-alice", "-n", ns)
	must(t, admin, "", "create", "configmap", "made-as-alice", "-n", ns, "--as=alice", "--as-group=acme:developers")
	audit, err := env.stack.Kube.Audit()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, ev := range audit {
		if ev.Verb != "create" || ev.ObjectRef == nil || ev.ObjectRef.Namespace != ns {
			continue
		}
		as := ""
		if ev.ImpersonatedUser != nil {
			as = " as " + ev.ImpersonatedUser.Username
		}
		byName[ev.ObjectRef.Name] = ev.User.Username + as
	}
	// Authenticated as herself: nobody impersonated her.
	if got := byName["made-by-alice"]; got != "alice" {
		t.Errorf("made-by-alice was created by %q in the audit log, want alice", got)
	}
	if got := byName["made-as-alice"]; got != "admin as alice" {
		t.Errorf("made-as-alice was created by %q in the audit log, want admin as alice", got)
	}

	// alice may not impersonate: the kube-apiserver says so itself.
	_, errs, err = kubectl(t, alice, "", "get", "configmaps", "-n", ns, "--as=admin")
	if want := `User "alice" cannot impersonate resource "users"`; err == nil || !strings.Contains(errs, want) {
		t.Fatalf("alice --as=admin: %v %s, want %q", err, errs, want)
	}

	// Headers of the client's that a front proxy's kube-apiserver reads
	// are dropped: alice stays alice.
	resp := call(t, http.MethodGet, "/clusters/"+cluster+"/api/v1/namespaces/kube-system/secrets", token("alice"), http.Header{
		"X-Remote-User":  {"admin"},
		"X-Remote-Group": {"system:masters", "tether:cluster-admins"},
	}, nil)
	if st := expectStatus(t, resp, http.StatusForbidden); !strings.Contains(st.Message, `User "alice"`) {
		t.Fatalf("alice with X-Remote-* headers of her own: %+v", st)
	}
}
