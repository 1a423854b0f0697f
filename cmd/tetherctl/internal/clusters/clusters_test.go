package clusters

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"sigs.k8s.io/yaml"
)

// deploy/agent.yaml is the manifest tetherctl prints, with placeholders
// and every option shown: the two cannot drift apart.
func TestDeployAgentYAMLIsTheManifest(t *testing.T) {
	opts := DefaultAgentOptions()
	opts.HTTPSProxy, opts.NoProxy = "http://PROXY_HOST:3128", "NO_PROXY_HOSTS"
	opts.SubscriberCA = "-----BEGIN CERTIFICATE-----\nSUBSCRIBER_CA\n-----END CERTIFICATE-----\n"
	got, err := Manifest(ManifestValues{ClusterID: "CLUSTER_ID", AgentEndpoint: "https://SUBSCRIBER_HOST",
		BootstrapToken: "BOOTSTRAP_TOKEN", Expires: "EXPIRES", AgentOptions: opts, Tenant: "TENANT",
		IdentityRoot: "-----BEGIN PUBLIC KEY-----\nIDENTITY_ROOT\n-----END PUBLIC KEY-----\n"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "..", "..", "deploy", "agent.yaml")
	if os.Getenv("UPDATE_DEPLOY") != "" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("deploy/agent.yaml differs from the manifest tetherctl prints; regenerate with UPDATE_DEPLOY=1 go test ./cmd/tetherctl/...")
	}
}

// Each option lands where the agent reads it, and a manifest without
// options carries none of them.
func TestManifestOptions(t *testing.T) {
	ca := testCA(t)
	for _, tc := range []struct {
		name      string
		opts      func(*AgentOptions)
		want, not []string
	}{
		{"defaults", func(*AgentOptions) {},
			[]string{"cpu: 50m, memory: 64Mi", "limits: {memory: 256Mi}", "--tenant=acme", "--identity-root-key=/etc/tether/identity-root/root.pub",
				"configMap: {name: tether-identity-root}", "  root.pub: |\n    -----BEGIN PUBLIC KEY-----\n"},
			[]string{"name: HTTPS_PROXY", "name: NO_PROXY", "--subscriber-ca=", "tether-subscriber-ca", "front-proxy", "extension-apiserver-authentication"}},
		{"proxy", func(o *AgentOptions) { o.HTTPSProxy, o.NoProxy = "http://proxy.corp:3128", "10.0.0.0/8,.corp" },
			[]string{`{name: HTTPS_PROXY, value: "http://proxy.corp:3128"}`, `$(KUBERNETES_SERVICE_HOST),kubernetes.default.svc,.svc,.cluster.local,localhost,127.0.0.1,10.0.0.0/8,.corp"`},
			[]string{"--subscriber-ca=", "tether-subscriber-ca"}},
		{"CA", func(o *AgentOptions) { o.SubscriberCA = ca },
			[]string{"--subscriber-ca=/etc/tether/subscriber-ca/ca.crt", "configMap: {name: tether-subscriber-ca}", "  ca.crt: |\n    -----BEGIN CERTIFICATE-----\n"},
			[]string{"name: HTTPS_PROXY"}},
		{"front proxy", func(o *AgentOptions) { o.FrontProxySecret = "tether-front-proxy" },
			[]string{"--identity-mode=front-proxy", "--front-proxy-cert=/etc/tether/front-proxy/tls.crt", "--front-proxy-key=/etc/tether/front-proxy/tls.key",
				"secret: {secretName: tether-front-proxy}", "name: extension-apiserver-authentication-reader", "mountPath: /etc/tether/front-proxy"},
			[]string{`verbs: ["impersonate"]`, "subjectaccessreviews"}},
		{"resources", func(o *AgentOptions) { o.CPURequest, o.MemoryRequest, o.MemoryLimit = "200m", "128Mi", "1Gi" },
			[]string{"requests: {cpu: 200m, memory: 128Mi}", "limits: {memory: 1Gi}"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultAgentOptions()
			tc.opts(&o)
			if err := o.Validate(); err != nil {
				t.Fatal(err)
			}
			m, err := Manifest(ManifestValues{ClusterID: "c1", AgentEndpoint: "https://agents.example.com", BootstrapToken: "t", Expires: "x", AgentOptions: o,
				Tenant: "acme", IdentityRoot: "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.want {
				if !bytes.Contains(m, []byte(s)) {
					t.Errorf("manifest lacks %q:\n%s", s, m)
				}
			}
			for _, s := range tc.not {
				if bytes.Contains(m, []byte(s)) {
					t.Errorf("manifest has %q:\n%s", s, m)
				}
			}
			for i, doc := range strings.Split(string(m), "\n---\n") {
				var v map[string]any
				if err := yaml.Unmarshal([]byte(doc), &v); err != nil || v["kind"] == nil {
					t.Errorf("document %d is not a Kubernetes object: %v\n%s", i, err, doc)
				}
			}
		})
	}
}

func TestAgentOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(*AgentOptions)
		want string
	}{
		{"proxy without scheme", func(o *AgentOptions) { o.HTTPSProxy = "proxy.corp:3128" }, "--https-proxy"},
		{"socks proxy", func(o *AgentOptions) { o.HTTPSProxy = "socks5://proxy.corp:1080" }, "--https-proxy"},
		{"no-proxy alone", func(o *AgentOptions) { o.NoProxy = ".corp" }, "--no-proxy without --https-proxy"},
		{"no-proxy with spaces", func(o *AgentOptions) { o.HTTPSProxy, o.NoProxy = "http://p:3128", "a, b" }, "--no-proxy"},
		{"CA not PEM", func(o *AgentOptions) { o.SubscriberCA = "not a certificate" }, "--subscriber-ca"},
		{"CA a key", func(o *AgentOptions) {
			o.SubscriberCA = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		}, "--subscriber-ca"},
		{"memory not a quantity", func(o *AgentOptions) { o.MemoryLimit = "1 GB" }, "--agent-memory-limit"},
		{"no image", func(o *AgentOptions) { o.Image = "" }, "agent image"},
		{"front-proxy Secret not a name", func(o *AgentOptions) { o.FrontProxySecret = "Front Proxy" }, "--front-proxy-secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultAgentOptions()
			tc.opts(&o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func testCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestPatiently(t *testing.T) {
	unavailable := connect.NewError(connect.CodeUnavailable, errors.New("dial tcp: connection refused"))
	denied := connect.NewError(connect.CodePermissionDenied, errors.New("not an admin"))
	for _, tc := range []struct {
		name      string
		wait      time.Duration
		results   []error // what each call returns; the last repeats
		wantCalls int
		want      error
	}{
		{"first call succeeds", time.Second, []error{nil}, 1, nil},
		{"up after two refusals", 10 * time.Second, []error{unavailable, unavailable, nil}, 3, nil},
		{"a refusal is final", 10 * time.Second, []error{unavailable, denied, nil}, 2, denied},
		{"no wait: one call", 0, []error{unavailable, nil}, 1, unavailable},
		{"never up: gives up", 300 * time.Millisecond, []error{unavailable}, -1, unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			start := time.Now()
			err := Patiently(context.Background(), tc.wait, func(context.Context) error {
				r := tc.results[min(calls, len(tc.results)-1)]
				calls++
				return r
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if tc.wantCalls >= 0 && calls != tc.wantCalls {
				t.Fatalf("%d calls, want %d", calls, tc.wantCalls)
			}
			if took := time.Since(start); took > tc.wait+time.Second {
				t.Fatalf("took %v, longer than the wait of %v", took, tc.wait)
			}
		})
	}
}
