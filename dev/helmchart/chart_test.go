package helmchart

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tether-dev/tether/dev/kube"
	"github.com/tether-dev/tether/dev/stack"
)

const release, namespace = "tether", "tether-helm"

// fixture is what every test here needs: the chart, its profiles and helm.
type fixture struct {
	root, chart string
	helm        *Helm
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("builds helm from the module proxy on first use")
	}
	root, err := stack.RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := EnsureHelm(t.Context(), root, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{root: root, chart: filepath.Join(root, "deploy", "helm", "tether"), helm: h}
}

// profiles are the documented values files; "" is the chart's defaults.
func (f *fixture) profiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(f.chart, "profiles", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range files {
		names = append(names, filepath.Base(p))
	}
	for _, want := range []string{"minimal.yaml", "production-secrets.yaml", "production-cert-manager.yaml"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Fatalf("profile %s is missing from %s/profiles", want, f.chart)
		}
	}
	return append([]string{""}, files...)
}

func valuesArgs(profile string) []string {
	if profile == "" {
		return nil
	}
	return []string{"-f", profile}
}

func (f *fixture) render(t *testing.T, profile string, extra ...string) []byte {
	t.Helper()
	args := append([]string{"template", release, f.chart, "--namespace", namespace}, valuesArgs(profile)...)
	out, err := f.helm.Run(t.Context(), append(args, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLint(t *testing.T) {
	f := newFixture(t)
	for _, p := range f.profiles(t) {
		t.Run(name(p), func(t *testing.T) {
			args := append([]string{"lint", "--strict", f.chart, "--namespace", namespace}, valuesArgs(p)...)
			if out, err := f.helm.Run(t.Context(), args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

func name(profile string) string {
	if profile == "" {
		return "defaults"
	}
	return strings.TrimSuffix(filepath.Base(profile), ".yaml")
}

// What each rendering must hold, beyond applying: the parts the issue
// asks for are there, not merely allowed.
func TestRenderedObjects(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		profile string
		want    map[string]int // kind/name suffix -> count; kind alone counts every object of it
	}{
		{"", map[string]int{"StatefulSet/nats": 1, "Deployment": 7, "Deployment/nats-auth": 1, "HorizontalPodAutoscaler/gateway": 1, "HorizontalPodAutoscaler/router": 1,
			"PodDisruptionBudget": 6, "NetworkPolicy": 9, "NetworkPolicy/nats-auth": 1, "ClusterRoleBinding/tether-helm-nats-auth": 1, "NetworkPolicy/default-deny": 1, "Service/gateway-public": 1, "Service/agents-public": 1,
			"Certificate": 0, "TLSRoute": 0}},
		{"minimal.yaml", map[string]int{"StatefulSet/nats": 1, "Deployment": 5, "HorizontalPodAutoscaler": 0, "PodDisruptionBudget": 0, "NetworkPolicy": 7}},
		{"production-secrets.yaml", map[string]int{"Deployment": 7, "HorizontalPodAutoscaler": 2, "PodDisruptionBudget": 6, "Certificate": 0}},
		{"production-cert-manager.yaml", map[string]int{"Certificate": 11, "Issuer": 2, "TLSRoute": 2, "Service/gateway-public": 0, "HorizontalPodAutoscaler": 2}},
	} {
		t.Run(name(tc.profile), func(t *testing.T) {
			p := tc.profile
			if p != "" {
				p = filepath.Join(f.chart, "profiles", p)
			}
			objs, err := Objects(f.render(t, p))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, o := range objs {
				kind, _ := o["kind"].(string)
				n, _ := o["metadata"].(map[string]any)["name"].(string)
				got[kind]++
				got[kind+"/"+strings.TrimPrefix(n, release+"-")]++
			}
			for k, want := range tc.want {
				if got[k] != want {
					t.Errorf("%s: %d, want %d", k, got[k], want)
				}
			}
			for _, o := range objs {
				checkWorkload(t, o)
			}
		})
	}
}

// checkWorkload checks what the Pod Security Standard does not: probes,
// resources, images tagged with the chart's version, no service account
// token but nats-auth's (its TokenReviews need one).
func checkWorkload(t *testing.T, o map[string]any) {
	t.Helper()
	kind, _ := o["kind"].(string)
	if kind != "Deployment" && kind != "StatefulSet" {
		return
	}
	b, _ := json.Marshal(o)
	var w struct {
		Metadata struct{ Name string }
		Spec     struct {
			Template struct {
				Spec struct {
					AutomountServiceAccountToken *bool
					Containers                   []struct {
						Name, Image                   string
						ReadinessProbe, LivenessProbe *json.RawMessage
						Resources                     struct{ Requests, Limits map[string]string }
					}
				}
			}
		}
	}
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	ps := w.Spec.Template.Spec
	if w.Metadata.Name == release+"-nats-auth" {
		if ps.AutomountServiceAccountToken != nil && !*ps.AutomountServiceAccountToken {
			t.Errorf("%s %s has no token for its TokenReviews", kind, w.Metadata.Name)
		}
	} else if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("%s %s mounts a service account token", kind, w.Metadata.Name)
	}
	for _, c := range ps.Containers {
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			t.Errorf("%s: container %s lacks a probe", w.Metadata.Name, c.Name)
		}
		if c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
			t.Errorf("%s: container %s lacks memory requests or limits", w.Metadata.Name, c.Name)
		}
		if strings.HasSuffix(c.Image, ":dev") || !strings.Contains(c.Image, ":") {
			t.Errorf("%s: image %s is not pinned to a release", w.Metadata.Name, c.Image)
		}
	}
}

// The defaults and every profile apply, server side, to a real
// kube-apiserver, in a namespace where Pod Security admission enforces
// "restricted": the Pods each workload would create are submitted too,
// since admission only warns about a Deployment's template.
func TestChartAppliesToARestrictedNamespace(t *testing.T) {
	f := newFixture(t)
	k := controlPlane(t, f)

	// The agent's namespace too: deploy/agent.yaml is checked below.
	for _, ns := range []string{namespace, "tether-system"} {
		k.must(t, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %s
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/warn-version: latest
`, ns), "apply", "-f", "-")
	}
	// The kinds of cert-manager and Gateway API the profiles use; this
	// control plane has neither installed.
	k.must(t, crds, "apply", "-f", "-")
	k.must(t, "", "wait", "--for=condition=Established", "--timeout=60s",
		"crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io", "crd/tlsroutes.gateway.networking.k8s.io")

	for _, p := range f.profiles(t) {
		t.Run(name(p), func(t *testing.T) {
			rendered := f.render(t, p)
			_, errs := k.must(t, string(rendered), "apply", "--dry-run=server", "-f", "-")
			if strings.Contains(errs, "Warning") {
				t.Errorf("the kube-apiserver warned:\n%s", errs)
			}
			objs, pods := objectsAndPods(t, rendered)
			if len(pods) < 3 {
				t.Fatalf("%d pods from the workloads, want at least NATS, gateway, router...", len(pods))
			}
			k.createServiceAccounts(t, objs)
			k.must(t, list(t, pods), "apply", "--dry-run=server", "-f", "-")
		})
	}

	// The agent's manifest (tetherctl's, with every option) is restricted too.
	t.Run("agent", func(t *testing.T) {
		manifest, err := os.ReadFile(filepath.Join(f.root, "deploy", "agent.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		_, errs := k.must(t, string(manifest), "apply", "--dry-run=server", "-f", "-")
		if strings.Contains(errs, "Warning") {
			t.Errorf("the kube-apiserver warned:\n%s", errs)
		}
		objs, pods := objectsAndPods(t, manifest)
		k.createServiceAccounts(t, objs)
		if len(pods) != 1 {
			t.Fatalf("%d pods from deploy/agent.yaml, want the agent's", len(pods))
		}
		k.must(t, list(t, pods), "apply", "--dry-run=server", "-f", "-")
	})

	// The namespace does refuse a Pod that is not restricted: the test
	// above would catch a chart that loosened its security context.
	t.Run("a looser pod is refused", func(t *testing.T) {
		_, pods := objectsAndPods(t, f.render(t, ""))
		loose := strings.Replace(list(t, pods[:1]), `"allowPrivilegeEscalation":false`, `"allowPrivilegeEscalation":true`, 1)
		out, errs, err := k.run(t, loose, "apply", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(errs, `violates PodSecurity "restricted:latest"`) {
			t.Fatalf("a pod allowing privilege escalation was not refused by Pod Security: err=%v\n%s%s", err, out, errs)
		}
	})
}

func objectsAndPods(t *testing.T, rendered []byte) (objs, pods []map[string]any) {
	t.Helper()
	objs, err := Objects(rendered)
	if err != nil {
		t.Fatal(err)
	}
	if pods, err = PodsOf(objs); err != nil {
		t.Fatal(err)
	}
	return objs, pods
}

func list(t *testing.T, items []map[string]any) string {
	t.Helper()
	anyItems := make([]any, len(items))
	for i, it := range items {
		anyItems[i] = it
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": anyItems})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Bad values are refused by helm itself, from values.schema.json, before
// anything renders.
func TestSchemaRefusesBadValues(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name string
		set  []string
		want string // the JSON pointer the schema error names
	}{
		{"unknown exposure", []string{"expose.type=NodePort"}, "/expose/type"},
		{"host with a scheme", []string{"expose.gateway.host=https://tether.example.com"}, "/expose/gateway/host"},
		{"empty agents host", []string{"expose.agents.host="}, "/expose/agents/host"},
		{"Gateway API without a Gateway", []string{"expose.type=GatewayAPI"}, "/expose/gatewayAPI/parentRefs"},
		{"unknown TLS source", []string{"tls.source=vault"}, "/tls/source"},
		{"cert-manager without an issuer", []string{"tls.source=certManager"}, "/tls/certManager/publicIssuer/name"},
		{"two NATS nodes", []string{"nats.replicas=2"}, "/nats/replicas"},
		{"lame duck under nats-server's minimum", []string{"nats.lameDuckDuration=10s"}, "/nats/lameDuckDuration"},
		{"JetStream size in Kubernetes units", []string{"nats.jetstream.maxFileStore=10Gi"}, "/nats/jetstream/maxFileStore"},
		{"no way to log in", []string{"gateway.tokens.enabled=false"}, "/gateway"},
		{"OIDC without a client id", []string{"gateway.oidc.issuerURL=https://login.example.com"}, "/gateway/oidc/clientID"},
		{"OIDC issuer over http", []string{"gateway.oidc.issuerURL=http://login.example.com", "gateway.oidc.clientID=tether"}, "/gateway/oidc/issuerURL"},
		{"zero routers", []string{"router.replicas=0"}, "/router/replicas"},
		{"misspelt value", []string{"subscriber.replica=3"}, "/subscriber"},
		{"unknown pull policy", []string{"image.pullPolicy=Sometimes"}, "/image/pullPolicy"},
		{"extra argument without dashes", []string{"gateway.extraArgs[0]=max-connections=10"}, "/gateway/extraArgs/0"},
		{"no memory limit", []string{"router.resources.limits=null"}, "/router/resources"},
		{"grace shorter than the lame duck", []string{"nats.terminationGracePeriodSeconds=30"}, "/nats/terminationGracePeriodSeconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"template", release, f.chart, "--namespace", namespace}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			out, err := f.helm.Run(t.Context(), args...)
			if err == nil {
				t.Fatalf("helm accepted %v", tc.set)
			}
			msg := err.Error()
			if !strings.Contains(msg, "don't meet the specifications of the schema") || !strings.Contains(msg, "at '"+tc.want+"'") {
				t.Fatalf("helm refused %v, but not by the schema at %s:\n%v\n%s", tc.set, tc.want, err, out)
			}
		})
	}
}

type kubectl struct{ bin, kubeconfig, cache string }

// shared is the one control plane of this package's tests: starting one
// takes a good part of the package's time on two cores.
var shared struct {
	once sync.Once
	cp   *kube.ControlPlane
	k    *kubectl
	err  error
}

// controlPlane starts the package's kube-apiserver the first time it is
// asked for; TestMain stops it.
func controlPlane(t *testing.T, f *fixture) *kubectl {
	t.Helper()
	shared.once.Do(func() {
		ctx := context.Background()
		bin, err := kube.EnsureBinaries(ctx, f.root, testWriter{t})
		if err != nil {
			shared.err = err
			return
		}
		dir, err := os.MkdirTemp("", "tether-helmchart-kube-")
		if err != nil {
			shared.err = err
			return
		}
		shared.cp, shared.err = kube.Start(ctx, kube.Config{BinDir: bin, Dir: dir, Log: io.Discard})
		if shared.err == nil {
			shared.k = &kubectl{bin: kubectlPath(bin), kubeconfig: shared.cp.AdminKubeconfig, cache: filepath.Join(dir, "kubectl-cache")}
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.k
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.cp != nil {
		_ = shared.cp.Stop()
	}
	os.Exit(code)
}

// createServiceAccounts creates, for real, the ServiceAccounts among objs:
// admission refuses a Pod whose account does not exist, even in a dry run.
func (k *kubectl) createServiceAccounts(t *testing.T, objs []map[string]any) {
	t.Helper()
	var sas []map[string]any
	for _, o := range objs {
		if o["kind"] == "ServiceAccount" {
			sas = append(sas, o)
		}
	}
	k.must(t, list(t, sas), "apply", "-f", "-")
}

func kubectlPath(kubeBin string) string {
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	return filepath.Join(kubeBin, "kubectl")
}

func (k *kubectl) run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), k.bin, append([]string{"--kubeconfig", k.kubeconfig, "--cache-dir", k.cache}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func (k *kubectl) must(t *testing.T, stdin string, args ...string) (string, string) {
	t.Helper()
	out, errs, err := k.run(t, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, errs)
	}
	return out, errs
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
