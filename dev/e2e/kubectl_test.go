package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: e2e-crud
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example.invalid/web:1
`

func TestKubectlLifecycleThroughTether(t *testing.T) {
	admin := kubeconfig(t, "admin")
	must(t, admin, "", "create", "namespace", "e2e-crud")
	t.Cleanup(func() { _, _, _ = kubectl(t, env.direct, "", "delete", "namespace", "e2e-crud", "--wait=false") })

	if out := must(t, admin, "", "get", "ns"); !strings.Contains(out, "e2e-crud") {
		t.Fatalf("get ns through Tether does not list the new namespace:\n%s", out)
	}
	must(t, admin, deployment, "apply", "-f", "-")
	out := must(t, admin, "", "get", "deployment", "web", "-n", "e2e-crud", "-o", "yaml")
	if !strings.Contains(out, "example.invalid/web:1") {
		t.Fatalf("get -o yaml:\n%s", out)
	}
	must(t, admin, "", "patch", "deployment", "web", "-n", "e2e-crud", "--type=merge", "-p", `{"metadata":{"labels":{"patched":"yes"}}}`)
	must(t, admin, strings.Replace(deployment, "web:1", "web:2", 1), "apply", "--server-side", "--force-conflicts", "-f", "-")

	// Checked against the kube-apiserver directly, not through Tether.
	out = must(t, env.direct, "", "get", "deployment", "web", "-n", "e2e-crud", "-o", "jsonpath={.metadata.labels.patched} {.spec.template.spec.containers[0].image} {.metadata.managedFields[*].manager}")
	if !strings.HasPrefix(out, "yes example.invalid/web:2") || !strings.Contains(out, "kubectl") {
		t.Fatalf("direct read after patch and server-side apply: %q", out)
	}
	// The controller manager is real: the Deployment gets its ReplicaSet.
	waitFor(t, 60*time.Second, func() bool {
		out, _, err := kubectl(t, admin, "", "get", "replicasets", "-n", "e2e-crud", "-o", "name")
		return err == nil && strings.Contains(out, "replicaset.apps/web-")
	})
	must(t, admin, "", "delete", "deployment", "web", "-n", "e2e-crud")
	if _, errs, err := kubectl(t, env.direct, "", "get", "deployment", "web", "-n", "e2e-crud"); err == nil || !strings.Contains(errs, "NotFound") {
		t.Fatalf("deployment still there after delete through Tether: %v %s", err, errs)
	}
}

func TestWatchSeesUpdates(t *testing.T) {
	admin := kubeconfig(t, "admin")
	must(t, env.direct, "", "create", "namespace", "e2e-watch")
	t.Cleanup(func() { _, _, _ = kubectl(t, env.direct, "", "delete", "namespace", "e2e-watch", "--wait=false") })
	must(t, env.direct, "", "create", "configmap", "watched", "-n", "e2e-watch", "--from-literal=v=1")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.kubectl, "--kubeconfig", admin, "get", "cm", "watched", "-n", "e2e-watch", "-w",
		"--output-watch-events", "-o", "jsonpath={.type} {.object.data.v}{\"\\n\"}")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended before %q", want)
			}
			if got != want {
				t.Fatalf("watch printed %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("watch never printed %q", want)
		}
	}
	expect("ADDED 1")
	for i := 2; i <= 4; i++ {
		must(t, env.direct, "", "patch", "cm", "watched", "-n", "e2e-watch", "--type=merge", "-p", fmt.Sprintf(`{"data":{"v":"%d"}}`, i))
		expect(fmt.Sprintf("MODIFIED %d", i))
	}
}

func TestLargeListWithAndWithoutChunks(t *testing.T) {
	const n = 3000
	ns := "e2e-big"
	must(t, env.direct, "", "create", "namespace", ns)
	t.Cleanup(func() { _, _, _ = kubectl(t, env.direct, "", "delete", "namespace", ns, "--wait=false") })
	if err := createConfigMaps(t, ns, n, 512); err != nil {
		t.Fatal(err)
	}
	admin := kubeconfig(t, "admin")
	for _, chunk := range []string{"0", "500"} {
		out := must(t, admin, "", "get", "configmaps", "-n", ns, "--chunk-size="+chunk, "-o", "name")
		got := strings.Count(out, "configmap/cm-")
		if got != n {
			t.Fatalf("--chunk-size=%s listed %d configmaps, want %d", chunk, got, n)
		}
	}
}

func TestClusterRBACDecides(t *testing.T) {
	alice := kubeconfig(t, "alice")
	ns := "e2e-rbac"
	must(t, env.direct, "", "create", "namespace", ns)
	t.Cleanup(func() { _, _, _ = kubectl(t, env.direct, "", "delete", "namespace", ns, "--wait=false") })

	_, errs, err := kubectl(t, alice, "", "get", "configmaps", "-n", ns)
	if err == nil || !strings.Contains(errs, "Forbidden") || !strings.Contains(errs, `User "alice"`) {
		t.Fatalf("alice without RBAC: err=%v stderr=%s", err, errs)
	}
	// Her group, as the gateway authenticated it, reaches the cluster.
	must(t, env.direct, "", "create", "rolebinding", "devs-view", "-n", ns, "--clusterrole=view", "--group=acme:developers")
	waitFor(t, 30*time.Second, func() bool {
		_, _, err := kubectl(t, alice, "", "get", "configmaps", "-n", ns)
		return err == nil
	})
	// view does not allow writes: the cluster says so, not Tether.
	_, errs, err = kubectl(t, alice, "", "create", "configmap", "nope", "-n", ns)
	if err == nil || !strings.Contains(strings.ToLower(errs), "forbidden") {
		t.Fatalf("alice created a configmap with view rights: %v %s", err, errs)
	}
}

func TestClientImpersonationHasNoEffect(t *testing.T) {
	alice := kubeconfig(t, "alice")
	// kubectl --as sends Impersonate-User and Impersonate-Group headers.
	_, errs, err := kubectl(t, alice, "", "get", "secrets", "-n", "kube-system", "--as=admin", "--as-group=system:masters")
	if err == nil {
		t.Fatal("alice read kube-system secrets by impersonating admin")
	}
	if !strings.Contains(errs, `User "alice"`) {
		t.Fatalf("the cluster did not see alice: %s", errs)
	}
}

func waitFor(t *testing.T, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The agent's manifest in deploy/ is valid for a real kube-apiserver, and
// so are the Secrets `tether-dev secrets` prints for the Helm chart (the
// chart itself: dev/helmchart).
func TestDeployManifestsApply(t *testing.T) {
	for ns, f := range map[string]string{"tether-system": "agent.yaml", "tether": ""} {
		// Namespaces first: a server-side dry run does not create them.
		must(t, env.direct, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+ns+"\n", "apply", "-f", "-")
		if f != "" {
			must(t, env.direct, "", "apply", "--dry-run=server", "-f", filepath.Join(env.root, "deploy", f))
		}
	}
	secrets, err := exec.Command(env.stack.Bin("tether-dev"), "secrets", "--namespace", "tether",
		"--gateway-host", "tether.example.com", "--agents-host", "agents.example.com").Output()
	if err != nil {
		t.Fatalf("tether-dev secrets: %v", err)
	}
	must(t, env.direct, string(secrets), "apply", "--dry-run=server", "-f", "-")
}
