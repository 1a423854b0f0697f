package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/tunnel"
)

// UpgradeTransport opens HTTP/1.1 upgrades (exec, attach, port-forward) to
// the kube-apiserver. It dials for itself rather than through net/http,
// whose 101 connections cannot be half-closed: a client's end of input has
// to reach the kube-apiserver as an end of input, not as a hang-up.
//
// Credentials are not its business: wrap it like any transport (client-go's
// rest.HTTPWrappersForConfig) and put client certificates in TLS.
type UpgradeTransport struct {
	// TLS configures connections to https URLs; nil for the defaults.
	TLS    *tls.Config
	Dialer net.Dialer
}

// RoundTrip sends req on a new connection. With a 101 answer the response
// Body is the connection, an io.ReadWriteCloser that can also CloseWrite;
// otherwise it is the response body, and closing it closes the connection.
func (t *UpgradeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	conn, err := t.dial(req)
	if err != nil {
		return nil, err
	}
	// Until the head is read, only the request's context bounds the wait.
	stop := context.AfterFunc(req.Context(), func() { conn.Close() })
	fail := func(what string, err error) (*http.Response, error) {
		stop()
		conn.Close()
		if cerr := req.Context().Err(); cerr != nil {
			err = cerr
		}
		return nil, fmt.Errorf("%s %s: %w", what, req.URL.Redacted(), err)
	}
	if err := req.Write(conn); err != nil {
		return fail("sending upgrade request to", err)
	}
	br := bufio.NewReaderSize(conn, 4<<10)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail("reading upgrade response from", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if !stop() {
			return fail("upgrading", context.Canceled)
		}
		// The caller owns the connection from here, and its lifetime.
		resp.Body = &upgradedConn{r: br, Conn: conn}
		return resp, nil
	}
	resp.Body = &closeConn{ReadCloser: resp.Body, stop: stop, conn: conn}
	return resp, nil
}

func (t *UpgradeTransport) dial(req *http.Request) (net.Conn, error) {
	host, port := req.URL.Hostname(), req.URL.Port()
	switch req.URL.Scheme {
	case "https":
		if port == "" {
			port = "443"
		}
		cfg := &tls.Config{}
		if t.TLS != nil {
			cfg = t.TLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = host
		}
		// Upgrades exist only in HTTP/1.1.
		cfg.NextProtos = []string{"http/1.1"}
		d := tls.Dialer{NetDialer: &t.Dialer, Config: cfg}
		conn, err := d.DialContext(req.Context(), "tcp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, fmt.Errorf("dialing %s: %w", req.URL.Host, err)
		}
		return conn, nil
	case "http":
		if port == "" {
			port = "80"
		}
		conn, err := t.Dialer.DialContext(req.Context(), "tcp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, fmt.Errorf("dialing %s: %w", req.URL.Host, err)
		}
		return conn, nil
	}
	return nil, fmt.Errorf("upgrade to %s: unsupported scheme %q", req.URL.Redacted(), req.URL.Scheme)
}

// upgradedConn is a switched connection whose first bytes may already sit
// in the reader that parsed the 101.
type upgradedConn struct {
	r *bufio.Reader
	net.Conn
}

func (c *upgradedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite ends our direction only: for TLS a close_notify alert, which
// the peer reads as EOF while it can still write.
func (c *upgradedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

type closeConn struct {
	io.ReadCloser
	stop func() bool
	conn net.Conn
}

func (c *closeConn) Close() error {
	c.stop()
	err := c.ReadCloser.Close()
	c.conn.Close()
	return err
}

// switchProtocols answers an upgrade the kube-apiserver accepted, then
// carries the connection's bytes both ways until both directions have
// ended, or either breaks. Tether never looks inside: SPDY, WebSocket and
// whatever comes next pass through alike.
func (a *Agent) switchProtocols(ctx context.Context, log *slog.Logger, s *tunnel.Stream, resp *http.Response) {
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		a.fail(s, log, http.StatusBadGateway, "the kube-apiserver switched protocols on a connection that cannot be carried")
		return
	}
	defer conn.Close()
	protocol := tunnel.Upgrade(resp.Header)
	if protocol == "" {
		a.fail(s, log, http.StatusBadGateway, "the kube-apiserver answered 101 without naming a protocol")
		return
	}
	if err := s.SendHead(&tetherv1.Frame{Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{
		Status: http.StatusSwitchingProtocols, Headers: tunnel.FromHTTP(resp.Header, nil), Upgrade: protocol,
	}}}); err != nil {
		a.fail(s, log, http.StatusBadGateway, "the kube-apiserver's 101 cannot be carried: "+err.Error())
		return
	}
	a.metrics.upgraded.Inc()
	defer a.metrics.upgraded.Dec()
	if err := tunnel.Splice(ctx, s, conn); err != nil && ctx.Err() == nil {
		log.Info("upgraded connection broken off", "err", err)
	}
}
