package tunnel

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
)

type refusingTunnel struct {
	tetherv1connect.UnimplementedTunnelServiceHandler
}

func (refusingTunnel) Connect(context.Context, *connect.BidiStream[tetherv1.Frame, tetherv1.Frame]) error {
	return RetryLater(connect.CodeResourceExhausted, errors.New("busy"), 3*time.Second)
}

// The hint crosses a real HTTP/2 stream, as an agent's refused Connect
// sees it: on the Receive that waits for the Welcome.
func TestRetryAfterCrossesTheStream(t *testing.T) {
	path, h := tetherv1connect.NewTunnelServiceHandler(refusingTunnel{}, HandlerOptions())
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	client := tetherv1connect.NewTunnelServiceClient(srv.Client(), srv.URL, ClientOptions())
	stream := client.Connect(context.Background())
	_ = stream.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Hello{Hello: &tetherv1.Hello{ClusterId: "x"}}})
	_, err := stream.Receive()
	if d, ok := RetryAfter(err); !ok || d != 3*time.Second || connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("refusal %v: hint %v, %v", err, d, ok)
	}
}
