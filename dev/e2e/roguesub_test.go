package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/lib/agentcred"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/kstatus"
	"github.com/tether-dev/tether/lib/tunnel"
)

// rogueSubscriber serves the agents' endpoint with a subscriber's real
// certificate, and an agent of dev connects to it: what a compromised
// subscriber holds. It sends the agent whatever Open the test gives it.
type rogueSubscriber struct {
	tetherv1connect.UnimplementedTunnelServiceHandler
	opens   chan *tetherv1.Open
	answers chan *tetherv1.Frame
	next    uint64
}

func newRogueSubscriber(t *testing.T) *rogueSubscriber {
	t.Helper()
	r := &rogueSubscriber{opens: make(chan *tetherv1.Open), answers: make(chan *tetherv1.Frame, 16)}
	pki := filepath.Join(env.dir, "state", "pki")
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "subscriber-agents.crt"), filepath.Join(pki, "subscriber-agents.key"))
	if err != nil {
		t.Fatal(err)
	}
	path, h := tetherv1connect.NewTunnelServiceHandler(r, tunnel.HandlerOptions())
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	// The agent shows a credential the registry signed; the rogue, which
	// only wants its stream, never checks it.
	signer, err := agentcred.LoadSigner(filepath.Join(pki, "agent-signing.key"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	token, err := signer.Sign(agentcred.Claims{ClusterID: "dev", ClusterUID: "rogue", ID: "rogue", IssuedAt: now, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	credFile := filepath.Join(dir, "credential")
	b, _ := json.Marshal(map[string]any{"token": token, "expires": now.Add(time.Hour), "obtained": now})
	if err := os.WriteFile(credFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	_, _ = startOwnAgent(t, "agent-rogue-subscriber", false, "--cluster-id", "dev", "--streams", "1",
		"--subscriber-url", "https://127.0.0.1:"+port, "--credential-file", credFile)
	return r
}

// Connect holds the agent's stream: Hello, Welcome, then each Open the
// test sends, and every frame back to the test; pings are answered.
func (r *rogueSubscriber) Connect(ctx context.Context, stream *connect.BidiStream[tetherv1.Frame, tetherv1.Frame]) error {
	if f, err := stream.Receive(); err != nil || f.GetHello() == nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := stream.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Welcome{Welcome: &tetherv1.Welcome{
		SessionId: "rogue-session", SubscriberId: "rogue", PingIntervalMs: 1000}}}); err != nil {
		return err
	}
	recv := make(chan *tetherv1.Frame)
	go func() {
		defer close(recv)
		for {
			f, err := stream.Receive()
			if err != nil {
				return
			}
			recv <- f
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case open := <-r.opens:
			r.next++
			if err := stream.Send(&tetherv1.Frame{StreamId: r.next, Kind: &tetherv1.Frame_Open{Open: open}}); err != nil {
				return err
			}
		case f, ok := <-recv:
			if !ok {
				return nil
			}
			if p := f.GetPing(); p != nil {
				_ = stream.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Pong{Pong: &tetherv1.Pong{Nonce: p.Nonce}}})
				continue
			}
			if f.StreamId != 0 {
				r.answers <- f
			}
		}
	}
}

func (r *rogueSubscriber) send(t *testing.T, open *tetherv1.Open) kstatus.Status {
	t.Helper()
	select {
	case r.opens <- open: // once the agent's stream is up
	case <-time.After(30 * time.Second):
		t.Fatal("the agent never connected to the rogue subscriber")
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case f := <-r.answers:
			if st, ok := answered(t, f); ok {
				return st
			}
		case <-deadline:
			t.Fatalf("no answer to %s", open.RequestId)
		}
	}
}
