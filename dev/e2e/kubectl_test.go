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

// TestKubectlAsMeansWhatItMeansDirectly: kubectl --as through Tether acts
// as the named user when the cluster lets the caller impersonate them, and
// answers as the kube-apiserver does when it does not (ADR 011).
func TestKubectlAsMeansWhatItMeansDirectly(t *testing.T) {
	admin, alice := kubeconfig(t, "admin"), kubeconfig(t, "alice")
	ns := "e2e-as"
	must(t, env.direct, "", "create", "namespace", ns)
	t.Cleanup(func() { _, _, _ = kubectl(t, env.direct, "", "delete", "namespace", ns, "--wait=false") })
	must(t, env.direct, "", "create", "rolebinding", "devs-edit", "-n", ns, "--clusterrole=edit", "--group=acme:developers")
	must(t, env.direct, "", "create", "rolebinding", "uid-view", "-n", ns, "--clusterrole=view", "--user=carol")

	// The same questions through Tether (as admin) and directly (as the
	// cluster's own administrator): the same answers.
	asked := [][]string{
		{"--as=alice", "--as-group=acme:developers"},
		{"--as=alice"}, // no group: not a developer
		{"--as=carol", "--as-uid=u-carol"},
		{"--as=bob", "--as-group=acme:developers", "--as-group=acme:oncall"},
	}
	questions := [][]string{
		{"create", "configmaps", "-n", ns},
		{"get", "configmaps", "-n", ns},
		{"delete", "deployments", "-n", ns},
		{"get", "secrets", "-n", "kube-system"},
		{"create", "clusterrolebindings"},
	}
	for _, as := range asked {
		for _, q := range questions {
			args := append(append([]string{"auth", "can-i"}, q...), as...)
			viaTether, _, _ := kubectl(t, admin, "", args...)
			direct, _, _ := kubectl(t, env.direct, "", args...)
			if viaTether != direct || (viaTether != "yes\n" && viaTether != "no\n") {
				t.Errorf("can-i %v %v: through Tether %q, directly %q", q, as, viaTether, direct)
			}
		}
	}

	// What alice may not do, admin --as alice may not either, and the
	// cluster says so to alice's name, as it does directly.
	_, errTether, err1 := kubectl(t, admin, "", "get", "secrets", "-n", "kube-system", "--as=alice", "--as-group=acme:developers")
	_, errDirect, err2 := kubectl(t, env.direct, "", "get", "secrets", "-n", "kube-system", "--as=alice", "--as-group=acme:developers")
	if err1 == nil || err2 == nil || errTether != errDirect || !strings.Contains(errTether, `User "alice"`) {
		t.Fatalf("admin --as=alice: through Tether %v %q, directly %v %q", err1, errTether, err2, errDirect)
	}
	// And what she may, admin --as alice does, as alice in the audit log.
	must(t, admin, "", "create", "configmap", "made-as-alice", "-n", ns, "--as=alice", "--as-group=acme:developers")
	audit, err := env.stack.Kube.Audit()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range audit {
		if ev.ObjectRef != nil && ev.ObjectRef.Name == "made-as-alice" && ev.Verb == "create" {
			found = ev.ImpersonatedUser != nil && ev.ImpersonatedUser.Username == "alice"
		}
	}
	if !found {
		t.Fatal("the kube-apiserver's audit log has no create of made-as-alice as alice")
	}

	// alice has no right to impersonate: the kube-apiserver's words.
	_, errs, err := kubectl(t, alice, "", "get", "configmaps", "-n", ns, "--as=admin")
	want := `users "admin" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope`
	if err == nil || !strings.Contains(errs, want) {
		t.Fatalf("alice --as=admin: %v %s, want %q", err, errs, want)
	}
	// No one becomes system:masters through an agent that does not allow it.
	_, errs, err = kubectl(t, admin, "", "get", "secrets", "-n", "kube-system", "--as=admin", "--as-group=system:masters")
	if err == nil || !strings.Contains(errs, `does not impersonate \"system:masters\"`) && !strings.Contains(errs, `does not impersonate "system:masters"`) {
		t.Fatalf("admin --as-group=system:masters: %v %s", err, errs)
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
