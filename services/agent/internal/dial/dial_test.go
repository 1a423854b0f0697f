package dial

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ca is a throwaway certificate authority.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// serve signs a certificate for names (IP addresses or DNS names) valid
// from notBefore to notAfter.
func (c *ca) serve(t *testing.T, notBefore, notAfter time.Time, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "subscriber"},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (c *ca) file(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(p, c.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// subscriber is a TLS server with cert, speaking HTTP/2 unless h1Only.
func subscriber(t *testing.T, cert tls.Certificate, h1Only bool) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto", r.Proto)
	}))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.EnableHTTP2 = !h1Only
	if h1Only {
		s.TLS.NextProtos = []string{"http/1.1"}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func noProxy(*url.URL) (*url.URL, error) { return nil, nil }

func TestTransport(t *testing.T) {
	good, other := newCA(t), newCA(t)
	now := time.Now()
	valid := good.serve(t, now.Add(-time.Hour), now.Add(time.Hour), "127.0.0.1")
	tests := []struct {
		name   string
		cert   tls.Certificate
		caFile string
		h1Only bool
		want   string // "" for success; else a part of the error
	}{
		{name: "trusted through --subscriber-ca", cert: valid, caFile: good.file(t)},
		{name: "CA not trusted", cert: valid, caFile: other.file(t), want: "give --subscriber-ca the CA that signed it"},
		{name: "no CA beside the system roots", cert: valid, want: "give --subscriber-ca"},
		{name: "certificate for another host", cert: good.serve(t, now.Add(-time.Hour), now.Add(time.Hour), "subscriber.example"), caFile: good.file(t), want: `its certificate is not for "127.0.0.1"`},
		{name: "expired certificate", cert: good.serve(t, now.Add(-2*time.Hour), now.Add(-time.Hour), "127.0.0.1"), caFile: good.file(t), want: "has expired"},
		{name: "endpoint without HTTP/2", cert: valid, caFile: good.file(t), h1Only: true, want: "does not speak HTTP/2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := subscriber(t, tt.cert, tt.h1Only)
			rt, err := Transport(Config{URLs: []string{s.URL}, CAFile: tt.caFile, Proxy: noProxy})
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
			resp, err := rt.RoundTrip(req)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("RoundTrip: %v", err)
				}
				resp.Body.Close()
				if got := resp.Header.Get("X-Proto"); got != "HTTP/2.0" {
					t.Fatalf("spoke %s, want HTTP/2.0", got)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "subscriber https://"+s.Listener.Addr().String()) {
				t.Fatalf("error %q does not say %q and which subscriber", err, tt.want)
			}
		})
	}
}

func TestTransportRefusesCleartextUnlessAllowed(t *testing.T) {
	for _, tt := range []struct {
		urls    []string
		allowed bool
		want    string
	}{
		{urls: []string{"http://127.0.0.1:1"}, want: "--insecure-cleartext"},
		{urls: []string{"https://127.0.0.1:1", "http://127.0.0.1:2"}, want: "is cleartext"},
		{urls: []string{"ftp://127.0.0.1:1"}, want: "scheme must be https"},
		{urls: []string{"https://"}, want: "want https://HOST"},
		{urls: nil, want: "no subscriber URL"},
		{urls: []string{"http://127.0.0.1:1"}, allowed: true},
	} {
		_, err := Transport(Config{URLs: tt.urls, InsecureCleartext: tt.allowed})
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: %v", tt.urls, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: error %v, want one saying %q", tt.urls, err, tt.want)
		}
	}
}

// A development stack's cleartext subscriber is reached with HTTP/2
// without TLS when it is allowed.
func TestCleartextSpeaksHTTP2(t *testing.T) {
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto", r.Proto)
	}))
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	defer s.Close()
	rt, err := Transport(Config{URLs: []string{s.URL}, InsecureCleartext: true})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Proto"); got != "HTTP/2.0" {
		t.Fatalf("spoke %s, want HTTP/2.0", got)
	}
}

// The proxy the environment names is used for the subscribers, and a
// failure through it names it.
func TestProxyIsNamedInFailures(t *testing.T) {
	proxyURL, _ := url.Parse("http://127.0.0.1:1") // nothing listens there
	rt, err := Transport(Config{URLs: []string{"https://subscriber.example:8443"}, Proxy: func(*url.URL) (*url.URL, error) { return proxyURL, nil }})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://subscriber.example:8443/", nil)
	_, err = rt.RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "through proxy http://127.0.0.1:1") || !strings.Contains(err.Error(), "the proxy cannot be reached") {
		t.Fatalf("error %v: want the proxy named and said unreachable", err)
	}
}
