package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestIssue(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	// keyutil (the controller manager's reader) wants SEC 1 keys.
	if typ := pemType(t, ca.KeyPath); typ != "EC PRIVATE KEY" {
		t.Errorf("CA key PEM type %q, want EC PRIVATE KEY", typ)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	serverCert, serverKey, err := ca.IssueServer(dir, "server", []string{"127.0.0.1", "localhost", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, err := ca.IssueClient(dir, "client", "alice", []string{"g1", "g2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name            string
		certPath, key   string
		usage, wrong    x509.ExtKeyUsage
		dnsName, ip, cn string
		orgs            []string
	}{
		{"server", serverCert, serverKey, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth, "localhost", "127.0.0.1", "server", []string{"tether-dev"}},
		{"client", clientCert, clientKey, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth, "", "", "alice", []string{"g1", "g2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.certPath != filepath.Join(dir, tc.name+".crt") || tc.key != filepath.Join(dir, tc.name+".key") {
				t.Errorf("paths %s, %s; want dir/%s.crt, .key", tc.certPath, tc.key, tc.name)
			}
			cert, err := readCert(tc.certPath)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := readKey(tc.key); err != nil {
				t.Fatal(err)
			}
			opts := x509.VerifyOptions{Roots: roots, DNSName: tc.dnsName, KeyUsages: []x509.ExtKeyUsage{tc.usage}}
			if _, err := cert.Verify(opts); err != nil {
				t.Errorf("verify for %v: %v", tc.usage, err)
			}
			opts.KeyUsages = []x509.ExtKeyUsage{tc.wrong}
			if _, err := cert.Verify(opts); err == nil {
				t.Errorf("verify for %v succeeded, want an error", tc.wrong)
			}
			if tc.ip != "" && cert.VerifyHostname(tc.ip) != nil {
				t.Errorf("certificate not valid for %s: IPs %v", tc.ip, cert.IPAddresses)
			}
			if tc.ip != "" && len(cert.IPAddresses) != 2 {
				t.Errorf("IPAddresses = %v, want 127.0.0.1 and ::1", cert.IPAddresses)
			}
			if cert.Subject.CommonName != tc.cn || !slices.Equal(cert.Subject.Organization, tc.orgs) {
				t.Errorf("subject %v, want CN=%s O=%v", cert.Subject, tc.cn, tc.orgs)
			}
		})
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreateCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T)
		reuse bool
	}{
		{"existing", func(*testing.T) {}, true},
		{"missing key", func(t *testing.T) { remove(t, first.KeyPath) }, false},
		{"garbage cert", func(t *testing.T) { write(t, first.CertPath, "junk") }, false},
		{"expires in 10 days", func(t *testing.T) {
			tmpl := template("ca", nil)
			tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
			tmpl.KeyUsage = x509.KeyUsageCertSign
			tmpl.NotAfter = time.Now().Add(10 * 24 * time.Hour)
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, first.Key.Public(), first.Key)
			if err != nil {
				t.Fatal(err)
			}
			write(t, first.CertPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
			// Compare against the certificate on disk, not NewCA's.
			if first.Cert, err = x509.ParseCertificate(der); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"mismatched key", func(t *testing.T) {
			other, err := NewCA(t.TempDir(), "other")
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(other.KeyPath)
			if err != nil {
				t.Fatal(err)
			}
			write(t, first.KeyPath, string(b))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if first, err = NewCA(dir, "ca"); err != nil {
				t.Fatal(err)
			}
			tc.setup(t)
			got, err := LoadOrCreateCA(dir, "ca")
			if err != nil {
				t.Fatal(err)
			}
			if reused := got.Cert.Equal(first.Cert); reused != tc.reuse {
				t.Fatalf("reused = %v, want %v", reused, tc.reuse)
			}
			// Whatever it returns must be usable and match what is on disk.
			if _, _, err := got.IssueServer(t.TempDir(), "s", []string{"localhost"}); err != nil {
				t.Fatal(err)
			}
			if again, err := LoadOrCreateCA(dir, "ca"); err != nil || !again.Cert.Equal(got.Cert) {
				t.Fatalf("second load did not reuse the CA (err %v)", err)
			}
		})
	}
}

func TestWriteRSAKey(t *testing.T) {
	dir := t.TempDir()
	keyPath, pubPath := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := WriteRSAKey(keyPath, pubPath); err != nil {
		t.Fatal(err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(pubPath)
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("%s is not a PUBLIC KEY PEM", pubPath)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if pemType(t, keyPath) != "RSA PRIVATE KEY" || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Fatal("public key does not match the RSA private key")
	}
}

func pemType(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	return block.Type
}

func remove(t *testing.T, path string) {
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, s string) {
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWildcardServer: the gateway's certificate covers every cluster's host
// name, one label deep, and nothing else below the domain.
func TestWildcardServer(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	certPath, _, err := ca.IssueServer(dir, "gateway", []string{"127.0.0.1", "tether.localhost", "*.tether.localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := readCert(certPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, ok := range map[string]bool{
		"dev.tether.localhost": true, "tether.localhost": true, "DEV.Tether.Localhost": true,
		"a.b.tether.localhost": false, "dev.localhost": false, "devtether.localhost": false,
	} {
		_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if (err == nil) != ok {
			t.Errorf("%s: verify gave %v, want valid %v", name, err, ok)
		}
	}
}
