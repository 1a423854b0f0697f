package compose

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteRefusesBadOptions(t *testing.T) {
	dir := t.TempDir()
	good := Options{Dir: filepath.Join(dir, "s"), HostDir: filepath.Join(dir, "h"), GatewayURL: "https://127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no state folder", func(o *Options) { o.Dir = "" }, "folders are required"},
		{"no host folder", func(o *Options) { o.HostDir = "" }, "folders are required"},
		{"cleartext gateway", func(o *Options) { o.GatewayURL = "http://127.0.0.1:1" }, "is not https://"},
		{"negative owner", func(o *Options) { o.UID = -1 }, "must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			err := Write(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Write: %v, want an error saying %q", err, tc.want)
			}
			if _, err := os.Stat(o.Dir); o.Dir != "" && err == nil {
				t.Fatalf("Write made %s for bad options", o.Dir)
			}
		})
	}
}

// What the containers check each other's certificates against: every
// service name of docker-compose.yml, the key usages they need, and a
// state that a second `up` keeps.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: filepath.Join(dir, "state"), HostDir: filepath.Join(dir, "host", "compose"),
		GatewayURL: "https://127.0.0.1:18443", UID: os.Getuid(), GID: os.Getgid(), DataDirs: []string{t.TempDir()}}
	if err := os.MkdirAll(filepath.Dir(o.HostDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(o); err != nil {
		t.Fatal(err)
	}
	tether, kube := pool(t, filepath.Join(o.Dir, "ca.crt")), pool(t, filepath.Join(o.Dir, "kube", "ca.crt"))
	server, client := x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth
	for _, tc := range []struct {
		cert  string
		roots *x509.CertPool
		usage x509.ExtKeyUsage
		names []string
	}{
		{"nats", tether, server, NATSNodes},
		{"nats", tether, client, nil}, // the routes are mutual TLS
		{"subscriber-agents", tether, server, Subscribers},
		{"gateway", tether, server, []string{"gateway", "127.0.0.1", "localhost"}},
		{"gateway", tether, client, nil},
		{"agent-registry", tether, server, []string{"agent-registry"}},
		{"router", tether, server, []string{"router"}},
		{"subscriber", tether, client, nil},
		{"kube/apiserver", kube, server, []string{"kube-apiserver", "127.0.0.1"}},
		{"kube/etcd", kube, server, []string{"etcd"}},
		{"kube/etcd", kube, client, nil}, // etcd calls itself
		{"kube/apiserver-etcd-client", kube, client, nil},
		{"kube/apiserver-kubelet-client", kube, client, nil},
		{"kube/devnode", kube, server, []string{"127.0.0.1"}},
	} {
		cert := readCert(t, filepath.Join(o.Dir, tc.cert))
		names := tc.names
		if names == nil {
			names = []string{""}
		}
		for _, name := range names {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: tc.roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Errorf("%s for %v as %q: %v", tc.cert, tc.usage, name, err)
			}
		}
	}

	// The user's kubeconfig reaches the gateway with admin's token.
	kubeconfig := filepath.Join(o.HostDir, "kubeconfig-admin")
	b, err := os.ReadFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	url, token, ca := readKubeconfig(t, kubeconfig)
	if url != "https://127.0.0.1:18443/clusters/dev" {
		t.Errorf("server %s, want the gateway's cluster dev", url)
	}
	caPEM, err := os.ReadFile(filepath.Join(o.Dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca, caPEM) {
		t.Error("the kubeconfig does not carry the CA of the gateway's certificate")
	}
	admin, err := os.ReadFile(filepath.Join(o.Dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := os.ReadFile(filepath.Join(o.Dir, "tokens.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if tok := token; tok != string(admin) || !strings.Contains(string(tokens), "\n"+tok+",admin,") {
		t.Errorf("admin's token %q is not admin-token's nor admin's in tokens.csv", tok)
	}

	// A second up keeps the state: etcd's data and the agent's credential
	// were made with it.
	if err := os.Remove(filepath.Join(o.HostDir, "kubeconfig-admin")); err != nil {
		t.Fatal(err)
	}
	if err := Write(o); err != nil {
		t.Fatal(err)
	}
	again, err := os.ReadFile(filepath.Join(o.Dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, caPEM) {
		t.Error("a second Write made a new CA")
	}
	if b2, err := os.ReadFile(filepath.Join(o.HostDir, "kubeconfig-admin")); err != nil || !bytes.Equal(b2, b) {
		t.Errorf("a second Write did not write the same kubeconfig again: %v", err)
	}
}

func pool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatalf("%s: no certificate", path)
	}
	return p
}

// readCert reads name.crt, checking that name.key is its key.
func readCert(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(name+".crt", name+".key")
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf
}
