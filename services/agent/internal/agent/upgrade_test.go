package agent

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// upgrader is an HTTP/1.1 server that switches to a toy protocol: it says
// hello right behind the 101, echoes until the client's end of input, then
// says bye and hangs up. A 403 answers requests without the upgrade.
func upgrader(t *testing.T) *httptest.Server {
	t.Helper()
	// A stalled answer lasts until the test ends, whatever the server
	// thinks of its client meanwhile.
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "toy" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"kind":"Status","code":403}`)
			return
		}
		if r.URL.Query().Get("stall") != "" {
			<-release
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		// The first bytes of the new protocol share a packet with the head.
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: toy\r\n\r\nhello")
		_ = brw.Flush()
		_, _ = io.Copy(conn, brw)
		_, _ = io.WriteString(conn, "bye")
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	return srv
}

func upgradeRequest(t *testing.T, ctx context.Context, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "toy")
	return req
}

func TestUpgradeTransportKeepsHalfClose(t *testing.T) {
	srv := upgrader(t)
	rt := &UpgradeTransport{TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	resp, err := rt.RoundTrip(upgradeRequest(t, context.Background(), srv.URL+"/exec"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "toy" {
		t.Fatalf("got %s, Upgrade %q", resp.Status, resp.Header.Get("Upgrade"))
	}
	conn, ok := resp.Body.(interface {
		io.ReadWriteCloser
		CloseWrite() error
	})
	if !ok {
		t.Fatalf("the switched connection %T cannot be half-closed", resp.Body)
	}
	defer conn.Close()
	hello := make([]byte, 5)
	if _, err := io.ReadFull(conn, hello); err != nil || string(hello) != "hello" {
		t.Fatalf("bytes behind the head: %q, %v", hello, err)
	}
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	// Our end of input must reach the server as one, while its answer still
	// comes back.
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(conn)
	if err != nil || string(rest) != "pingbye" {
		t.Fatalf("after half-close: %q, %v", rest, err)
	}
}

func TestUpgradeTransportRefusal(t *testing.T) {
	srv := upgrader(t)
	rt := &UpgradeTransport{TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	req := upgradeRequest(t, context.Background(), srv.URL+"/exec")
	req.Header.Set("Upgrade", "other")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden || string(body) != `{"kind":"Status","code":403}` {
		t.Fatalf("got %s %q, want the server's 403 unchanged", resp.Status, body)
	}
}

func TestUpgradeTransportCancelWhileWaiting(t *testing.T) {
	srv := upgrader(t)
	rt := &UpgradeTransport{TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() {
		_, err := rt.RoundTrip(upgradeRequest(t, ctx, srv.URL+"/exec?stall=1"))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a cancelled upgrade succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not end a wait for the 101")
	}
}
