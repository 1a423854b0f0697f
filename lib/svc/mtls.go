package svc

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// MTLS is how a service proves itself to the other services, and checks
// them, on internal hops (gateway to router, gateway and subscriber to
// agent-registry): a certificate of Tether's internal CA whose CommonName
// is the service's name, and that CA. A server accepts only callers whose
// certificate the CA signed and whose name it allows, so no service trusts
// another for where it is on the network. Without certificates the hops
// are HTTP/2 without TLS, for a single machine only.
type MTLS struct {
	CertFile, KeyFile, CAFile string
	// Allow is who may call this service (certificate CommonNames).
	Allow []string

	pair *keyPair
}

// Register adds --mtls-cert, --mtls-key, --mtls-ca and, when allow is not
// empty (the service serves internal calls), --mtls-allow with that
// default.
func (m *MTLS) Register(fs *flag.FlagSet, allow string) {
	fs.StringVar(&m.CertFile, "mtls-cert", os.Getenv("TETHER_MTLS_CERT"), "this service's certificate for internal hops (PEM; reloaded when it changes); empty: no TLS between services")
	fs.StringVar(&m.KeyFile, "mtls-key", os.Getenv("TETHER_MTLS_KEY"), "its key (PEM)")
	fs.StringVar(&m.CAFile, "mtls-ca", os.Getenv("TETHER_MTLS_CA"), "the internal CA that signs every service's certificate")
	if allow != "" {
		fs.Func("mtls-allow", "services (certificate common names) that may call this one, comma-separated (default "+allow+")", func(s string) error {
			m.Allow = strings.Split(s, ",")
			return nil
		})
		m.Allow = strings.Split(allow, ",")
	}
}

// Enabled reports whether certificates were given.
func (m *MTLS) Enabled() bool { return m.CertFile != "" }

func (m *MTLS) load() (*x509.CertPool, error) {
	if m.CertFile == "" || m.KeyFile == "" || m.CAFile == "" {
		return nil, errors.New("mtls: --mtls-cert, --mtls-key and --mtls-ca go together")
	}
	pem, err := os.ReadFile(m.CAFile)
	if err != nil {
		return nil, fmt.Errorf("mtls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("mtls: no certificate in %s", m.CAFile)
	}
	if m.pair == nil {
		m.pair = &keyPair{certFile: m.CertFile, keyFile: m.KeyFile}
		if _, err := m.pair.get(); err != nil {
			return nil, err
		}
	}
	return pool, nil
}

// Transport is the HTTP/2 transport for calls to other services: TLS with
// this service's certificate, trusting only the internal CA; HTTP/2 without
// TLS when no certificates were given.
func (m *MTLS) Transport() (*http.Transport, error) {
	t := H2CTransport()
	if !m.Enabled() {
		return t, nil
	}
	pool, err := m.load()
	if err != nil {
		return nil, err
	}
	t.Protocols = nil
	t.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return m.pair.get()
		},
	}
	return t, nil
}

// Scheme is the URL scheme of internal calls: https with certificates.
func (m *MTLS) Scheme() string {
	if m.Enabled() {
		return "https"
	}
	return "http"
}

// Server returns the server for internal calls to h, and whether it
// serves TLS: with certificates, only callers the CA signed and Allow
// names get through the handshake.
func (m *MTLS) Server(h http.Handler) (*http.Server, bool, error) {
	s := H2CServer(h)
	if !m.Enabled() {
		return s, false, nil
	}
	pool, err := m.load()
	if err != nil {
		return nil, false, err
	}
	if len(m.Allow) == 0 {
		return nil, false, errors.New("mtls: a server must allow some callers (--mtls-allow)")
	}
	s.Protocols = nil
	s.TLSConfig = &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  pool,
		NextProtos: []string{"h2"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return m.pair.get()
		},
		// The chain is verified by then; this decides who the caller is.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("mtls: no client certificate")
			}
			if cn := cs.PeerCertificates[0].Subject.CommonName; !slices.Contains(m.Allow, cn) {
				return fmt.Errorf("mtls: %q may not call this service", cn)
			}
			return nil
		},
	}
	return s, true, nil
}

// keyPair is a certificate and key on disk, read again when the files
// change (a rotated Secret), looked at no more than every few seconds.
type keyPair struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	checked time.Time
	modTime time.Time
}

func (k *keyPair) get() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cert != nil && time.Since(k.checked) < 5*time.Second {
		return k.cert, nil
	}
	k.checked = time.Now()
	fi, err := os.Stat(k.certFile)
	if err != nil {
		if k.cert != nil {
			return k.cert, nil // keep serving with what was loaded
		}
		return nil, fmt.Errorf("reading certificate: %w", err)
	}
	if k.cert != nil && fi.ModTime().Equal(k.modTime) {
		return k.cert, nil
	}
	c, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		if k.cert != nil {
			return k.cert, nil // half-written during a rotation: next time
		}
		return nil, fmt.Errorf("loading certificate %s: %w", k.certFile, err)
	}
	k.cert, k.modTime = &c, fi.ModTime()
	return k.cert, nil
}

// Only lets through to h the callers named, by the certificate they showed
// in the handshake, when mTLS is on: for a listener that serves several
// APIs to different callers. Others get 403.
func (m *MTLS) Only(h http.Handler, callers ...string) http.Handler {
	if !m.Enabled() {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || !slices.Contains(callers, r.TLS.PeerCertificates[0].Subject.CommonName) {
			http.Error(w, "this caller may not use this API", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}
