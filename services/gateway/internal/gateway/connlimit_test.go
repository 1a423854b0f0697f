package gateway

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/gateway/internal/identity"
)

func TestLimitConnections(t *testing.T) {
	g := newTestGateway(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	limited := g.LimitConnections(ln, 3, 2)
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := limited.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(local string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// closedByServer reports whether the server closed c at once.
	closedByServer := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return false
		}
		return err != nil
	}
	a1 := dial("127.0.0.1")
	<-accepted
	a2 := dial("127.0.0.1")
	first := <-accepted // a2's server side
	if a3 := dial("127.0.0.1"); !closedByServer(a3) {
		t.Fatal("a third connection from one address was kept (per-IP limit 2)")
	}
	b1 := dial("127.0.0.2")
	<-accepted
	if b2 := dial("127.0.0.3"); !closedByServer(b2) {
		t.Fatal("a fourth connection was kept (limit 3)")
	}
	// Closing gives the slot back, once even when closed twice.
	_ = first.Close()
	_ = first.Close()
	_ = a2.Close()
	c := dial("127.0.0.3")
	select {
	case <-accepted:
	case <-time.After(2 * time.Second):
		t.Fatal("a freed slot was not reused")
	}
	if closedByServer(c) || closedByServer(a1) || closedByServer(b1) {
		t.Fatal("a connection within the limits was closed")
	}
}

func newTestGateway(t *testing.T) *Gateway {
	t.Helper()
	signer, _ := testIdentityKeys(t)
	g, err := New(Config{
		Identities: signer,
		Auth:       identity.Chain{},
		Routers:    []tetherv1connect.ProxyServiceClient{tetherv1connect.NewProxyServiceClient(http.DefaultClient, "http://127.0.0.1:1")},
		Limits:     Limits{MaxHeaderBytes: tunnel.MaxHead},
		Instruments: telemetry.Instruments{
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
			Tracer: noop.NewTracerProvider().Tracer(""), Propagator: propagation.TraceContext{},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}
