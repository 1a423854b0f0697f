package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClusterServer(t *testing.T) {
	tests := []struct {
		base, cluster, address, domain string
		want                           string
		wantErr                        string
	}{
		{"https://gw.example.com", "dev", "path", "", "https://gw.example.com/clusters/dev", ""},
		{"https://127.0.0.1:8443", "dev", "path", "", "https://127.0.0.1:8443/clusters/dev", ""},
		{"https://gw.example.com", "dev", "host", "gw.example.com", "https://dev.gw.example.com", ""},
		{"https://127.0.0.1:8443", "dev", "host", "Tether.Localhost.", "https://dev.tether.localhost:8443", ""},
		{"https://127.0.0.1:8443", "dev", "host", "127.0.0.1", "", "--cluster-domain"},
		{"https://[::1]:8443", "dev", "host", "::1", "", "--cluster-domain"},
		{"https://gw.example.com", "dev", "host", "", "", "--cluster-domain"},
		{"https://gw.example.com", "Dev", "path", "", "", "not a cluster id"},
		{"https://gw.example.com", "a.b", "host", "x.com", "", "not a cluster id"},
		{"http://gw.example.com", "dev", "path", "", "", "https"},
		{"https://gw.example.com", "dev", "both", "", "", "host or path"},
	}
	for _, tt := range tests {
		got, err := clusterServer(tt.base, tt.cluster, tt.address, tt.domain)
		if got != tt.want || (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("clusterServer(%q, %q, %q, %q) = %q, %v; want %q, %q", tt.base, tt.cluster, tt.address, tt.domain, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestClusterDomain(t *testing.T) {
	for server, want := range map[string]string{
		"https://gw.example.com/clusters/dev":    "gw.example.com",
		"https://dev.tether.localhost:8443":      "tether.localhost",
		"https://dev.tether.localhost:8443/":     "tether.localhost",
		"https://127.0.0.1:8443/clusters/dev":    "127.0.0.1",
		"https://gw.example.com/clusters/":       "gw.example.com",
		"https://prod.k8s.example.com:443/":      "k8s.example.com",
		"https://gw.example.com:8443/clusters/x": "gw.example.com",
	} {
		if got := clusterDomain(server); got != want {
			t.Errorf("clusterDomain(%q) = %q, want %q", server, got, want)
		}
	}
}

// TestWriteKubeconfig: tetherctl's kubeconfig keeps the user entry whole
// (an exec plugin's every field) and the CA, and names the cluster as asked.
func TestWriteKubeconfig(t *testing.T) {
	dir := t.TempDir()
	ca := "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), []byte(ca), 0o600); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "config")
	if err := os.WriteFile(src, []byte(`apiVersion: v1
kind: Config
current-context: t
clusters:
- name: c
  cluster: {server: "https://gw.example.com:8443/clusters/dev", certificate-authority: ca.crt}
users:
- name: u
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: tetherctl, args: [login, --issuer, "https://idp"], interactiveMode: IfAvailable, provideClusterInfo: false}
contexts:
- name: t
  context: {cluster: c, user: u}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ address, domain, server string }{
		{"host", "", "https://prod.gw.example.com:8443"},
		{"path", "", "https://gw.example.com:8443/clusters/prod"},
		{"host", "k8s.example.com", "https://prod.k8s.example.com:8443"},
	} {
		var out bytes.Buffer
		c := connection{kubeconfig: src}
		if err := c.writeKubeconfig(&out, "prod", tt.address, tt.domain); err != nil {
			t.Fatal(err)
		}
		written := filepath.Join(dir, "written")
		if err := os.WriteFile(written, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := readKubeconfig(written)
		if err != nil {
			t.Fatal(err)
		}
		if k.server != tt.server || string(k.caPEM) != ca || k.exec == nil || k.exec.Command != "tetherctl" || k.rawUser["exec"].(map[string]any)["interactiveMode"] != "IfAvailable" {
			t.Errorf("%s: server %q CA %q user %v\n%s", tt.address, k.server, k.caPEM, k.rawUser, out.String())
		}
	}
}
