// Package dial is the agent's only way out of its cluster: HTTP/2 over TLS
// to the subscribers, trusting the system's roots and the operator's CA,
// through the HTTP CONNECT proxy the environment names (HTTPS_PROXY,
// NO_PROXY), since a restricted-egress cluster often allows nothing else.
// Streams, enrollment and renewal all go this way.
//
// A failure says what to fix: a subscriber certificate the agent does not
// trust, one for another host name or out of date, a proxy that refused
// the tunnel, or an endpoint that does not speak HTTP/2 (a load balancer
// that terminates TLS and talks HTTP/1.1 on).
package dial

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// Config says how the agent reaches its subscribers.
type Config struct {
	// URLs are the subscribers' base URLs, https:// (http:// only with
	// InsecureCleartext).
	URLs []string
	// CAFile, if set, is a PEM bundle trusted in addition to the system
	// roots: the CA of a subscriber certificate no public CA signed.
	CAFile string
	// InsecureCleartext allows http:// URLs, spoken as HTTP/2 without
	// TLS: for debugging on one machine, never through a network.
	InsecureCleartext bool
	// Proxy picks the proxy for a URL; nil: HTTPS_PROXY, HTTP_PROXY and
	// NO_PROXY (and their lower-case forms) as the process started with.
	Proxy func(*url.URL) (*url.URL, error)
	// PingInterval and PingTimeout keep an idle HTTP/2 connection proven
	// alive (default 10 s and 5 s), so a path a proxy or NAT dropped is
	// noticed even when no stream is open.
	PingInterval, PingTimeout time.Duration
}

// Transport returns the round tripper for every call to the subscribers.
func Transport(cfg Config) (http.RoundTripper, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("dial: no subscriber URL")
	}
	cleartext := false
	for _, raw := range cfg.URLs {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("dial: subscriber URL %q: want https://HOST[:PORT]", raw)
		}
		switch u.Scheme {
		case "https":
		case "http":
			if !cfg.InsecureCleartext {
				return nil, fmt.Errorf("dial: subscriber URL %q is cleartext: use https://, or --insecure-cleartext on a development machine", raw)
			}
			cleartext = true
		default:
			return nil, fmt.Errorf("dial: subscriber URL %q: scheme must be https", raw)
		}
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 10 * time.Second
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = 5 * time.Second
	}
	proxy := cfg.Proxy
	if proxy == nil {
		env := httpproxy.FromEnvironment()
		fn := env.ProxyFunc()
		proxy = func(u *url.URL) (*url.URL, error) { return fn(u) }
	}
	roots, err := Roots(cfg.CAFile)
	if err != nil {
		return nil, err
	}
	t := &http.Transport{
		Proxy:               func(r *http.Request) (*url.URL, error) { return proxy(r.URL) },
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		MaxIdleConns:        16,
		IdleConnTimeout:     90 * time.Second,
		HTTP2:               &http.HTTP2Config{SendPingTimeout: cfg.PingInterval, PingTimeout: cfg.PingTimeout},
	}
	// HTTP/2 only: the agent's stream is a bidirectional stream, which
	// HTTP/1.1 cannot carry; an endpoint that offers no h2 fails the
	// handshake here instead of a 505 later.
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP2(true)
	out := &explaining{rt: t, proxy: proxy}
	if cleartext {
		h2c := t.Clone()
		h2c.Proxy = nil // a CONNECT tunnel for cleartext is not what anyone deploys
		h2c.Protocols = new(http.Protocols)
		h2c.Protocols.SetUnencryptedHTTP2(true)
		out.cleartext = h2c
	}
	return out, nil
}

// Roots are the system's trusted roots plus the PEM certificates in
// caFile. A FROM-scratch image has the system bundle at
// /etc/ssl/certs/ca-certificates.crt, where Go looks (SSL_CERT_FILE moves
// it).
func Roots(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("dial: reading the subscriber CA: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("dial: no PEM certificate in the subscriber CA %s", caFile)
	}
	return pool, nil
}

// explaining sends https through the TLS transport and, with cleartext
// allowed, http through an HTTP/2-without-TLS one; a failure comes back
// with what to fix in front of it.
type explaining struct {
	rt, cleartext http.RoundTripper
	proxy         func(*url.URL) (*url.URL, error)
}

func (e *explaining) RoundTrip(r *http.Request) (*http.Response, error) {
	rt := e.rt
	if r.URL.Scheme == "http" {
		if e.cleartext == nil {
			return nil, fmt.Errorf("dial: %s is cleartext and --insecure-cleartext is off", r.URL.Redacted())
		}
		rt = e.cleartext
	}
	resp, err := rt.RoundTrip(r)
	if err != nil {
		var via *url.URL
		if r.URL.Scheme == "https" {
			via, _ = e.proxy(r.URL)
		}
		return nil, Explain(err, r.URL, via)
	}
	return resp, nil
}

// Explain puts in front of err, a failure to reach target (through proxy,
// if not nil), what the operator should check. The original error stays
// wrapped.
func Explain(err error, target, proxy *url.URL) error {
	where := "subscriber " + target.Scheme + "://" + target.Host
	if proxy != nil {
		where += " through proxy " + proxy.Redacted()
	}
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var hint string
	switch {
	case errors.As(err, &unknown):
		hint = "its certificate is signed by a CA this agent does not trust: give --subscriber-ca the CA that signed it"
	case errors.As(err, &host):
		hint = fmt.Sprintf("its certificate is not for %q: --subscriber-url must name a host the certificate covers", host.Host)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		hint = "its certificate has expired or is not valid yet (or this machine's clock is off)"
	case errors.As(err, &invalid):
		hint = "its certificate is not valid for a server: " + invalid.Error()
	case strings.Contains(err.Error(), "proxyconnect"):
		hint = "the proxy cannot be reached"
	case proxy != nil && isProxyRefusal(err):
		hint = "the proxy refused the tunnel (its rules must allow CONNECT to the subscriber's host and port)"
	case strings.Contains(err.Error(), "ALPN") || strings.Contains(err.Error(), "no application protocol"):
		hint = "it does not speak HTTP/2 over TLS: a load balancer in front of the subscribers must pass TLS through (TCP), not terminate it as HTTP/1.1"
	default:
		return fmt.Errorf("%s: %w", where, err)
	}
	return fmt.Errorf("%s: %s: %w", where, hint, err)
}

// isProxyRefusal: the proxy answered CONNECT with something other than
// 200 (net/http returns its status line as the error).
func isProxyRefusal(err error) bool {
	s := err.Error()
	for _, status := range []string{"403", "407", "405", "502", "503", "Forbidden", "Proxy Authentication Required", "Bad Gateway"} {
		if strings.Contains(s, status) {
			return true
		}
	}
	return false
}
