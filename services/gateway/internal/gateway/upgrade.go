package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/kstatus"
	"github.com/tether-dev/tether/lib/tunnel"
)

// switchProtocols completes an upgrade the cluster accepted: it writes the
// 101 on the client's own connection, then carries the connection's bytes
// both ways over the router's stream until both directions have ended or
// either breaks. A clean end of one direction is passed on as a half-close.
// Nothing here knows SPDY or WebSocket.
func (g *Gateway) switchProtocols(ctx context.Context, cancel context.CancelFunc, log *slog.Logger, w http.ResponseWriter, resp *tetherv1.Response, call routerCall) {
	up, receive, end := call.upgrade, call.receive, call.end
	// Counted before the hijack, while the server still tracks the
	// connection, so a shutdown that has returned has seen it.
	if !g.beginHijack() {
		kstatus.Write(w, kstatus.New(http.StatusServiceUnavailable, "the gateway is shutting down").WithRetryAfter(time.Second))
		return
	}
	defer g.hijacked.Done()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		log.Error("cannot take over the client's connection for an upgrade", "err", err)
		return
	}
	defer conn.Close()
	closeAtShutdown := context.AfterFunc(g.stopHijacked, func() { cancel(); conn.Close() })
	defer closeAtShutdown()
	// The server's read-header deadline may still be set on the connection;
	// an upgraded connection lives as long as its peers keep it.
	_ = conn.SetDeadline(time.Time{})
	if err := writeSwitch(brw.Writer, resp); err != nil {
		log.Info("client gone before the 101", "err", err)
		return
	}
	g.upgrades.WithLabelValues(protocolLabel(resp.Upgrade)).Inc()
	g.upgraded.Inc()
	defer g.upgraded.Dec()

	// Both directions run on their own, so a failure of either is seen at
	// once, even while the other is idle: a client that vanished from an
	// idle port-forward must not leave its session open everywhere.
	fromClient, toClient := make(chan error, 1), make(chan error, 1)
	go func() { fromClient <- pumpClient(brw.Reader, up) }()
	go func() { toClient <- pumpRouter(conn, receive) }()
	for pending := 2; pending > 0; pending-- {
		var err error
		select {
		case err = <-fromClient:
			fromClient = nil
		case err = <-toClient:
			toClient = nil
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Info("upgraded connection broken off", "err", err)
			}
			// Tear down everything: the router's stream, and the client.
			cancel()
			end()
			conn.Close()
			if fromClient != nil {
				<-fromClient
			}
			if toClient != nil {
				<-toClient
			}
			return
		}
	}
	// Both directions ended cleanly: read the router's end of stream, so
	// the call ends as cleanly at every hop instead of being reset; a
	// router that does not end it soon is reset after all.
	stop := time.AfterFunc(5*time.Second, end)
	finish(receive)
	stop.Stop()
}

// beginHijack counts an upgraded connection about to be taken over, unless
// the gateway is already waiting for the last of them.
func (g *Gateway) beginHijack() bool {
	g.hijackMu.Lock()
	defer g.hijackMu.Unlock()
	if g.hijackClosed {
		return false
	}
	g.hijacked.Add(1)
	return true
}

// WaitUpgraded waits for upgraded connections (exec, attach, port-forward
// sessions) to end, and closes those still open when ctx ends. Call it
// after the HTTP server has shut down; upgrades that have not switched yet
// are refused from now on.
func (g *Gateway) WaitUpgraded(ctx context.Context) {
	g.hijackMu.Lock()
	g.hijackClosed = true
	g.hijackMu.Unlock()
	done := make(chan struct{})
	go func() {
		g.hijacked.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	if ctx.Err() != nil {
		g.closeAll()
	}
	<-done
}

// protocolLabel bounds the protocol metric label: the value comes from the
// cluster and could be anything.
func protocolLabel(upgrade string) string {
	switch p := strings.ToLower(upgrade); {
	case p == "websocket":
		return "websocket"
	case strings.HasPrefix(p, "spdy/"):
		return "spdy"
	}
	return "other"
}

// writeSwitch writes the 101 head: the cluster's headers plus our own
// connection-level ones.
func writeSwitch(bw *bufio.Writer, resp *tetherv1.Response) error {
	h := http.Header{}
	tunnel.ToHTTP(resp.Headers, h, nil)
	tunnel.SetUpgrade(h, resp.Upgrade)
	if _, err := bw.WriteString("HTTP/1.1 101 Switching Protocols\r\n"); err != nil {
		return err
	}
	if err := h.Write(bw); err != nil {
		return err
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	return bw.Flush()
}

// pumpClient sends what the client writes (starting with anything already
// buffered behind its request head) to the router. At the client's end of
// input it half-closes the stream.
func pumpClient(r io.Reader, up proxyStream) error {
	bp := tunnel.GetChunk()
	defer tunnel.PutChunk(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := up.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: buf[:n]}}}); serr != nil {
				return fmt.Errorf("sending to the router: %w", serr)
			}
		}
		if errors.Is(err, io.EOF) {
			if serr := up.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{End: true}}}); serr != nil {
				return fmt.Errorf("sending to the router: %w", serr)
			}
			return up.CloseRequest()
		}
		if err != nil {
			return fmt.Errorf("reading from the client: %w", err)
		}
	}
}

// pumpRouter writes the cluster's bytes to the client; at their end it
// half-closes the client's connection.
func pumpRouter(conn net.Conn, receive func() (*tetherv1.Frame, error)) error {
	for {
		f, err := receive()
		if err != nil {
			return fmt.Errorf("receiving from the router: %w", err)
		}
		d := f.GetData()
		if d == nil {
			return fmt.Errorf("router sent %T inside an upgraded connection", f.Kind)
		}
		if len(d.Chunk) > 0 {
			if _, err := conn.Write(d.Chunk); err != nil {
				return fmt.Errorf("writing to the client: %w", err)
			}
		}
		if d.End {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				if err := cw.CloseWrite(); err != nil {
					return fmt.Errorf("half-closing the client's connection: %w", err)
				}
			}
			return nil
		}
	}
}
