package launch

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/tunnel"
)

// echo answers a Call with two frames, and a Proxy stream with each
// frame it gets, as it gets it; ended hears when a Proxy call returns.
type echo struct {
	tetherv1connect.UnimplementedProxyServiceHandler
	ended chan error
}

func (echo) Call(_ context.Context, req *connect.Request[tetherv1.Frame], ss *connect.ServerStream[tetherv1.Frame]) error {
	for range 2 {
		if err := ss.Send(req.Msg); err != nil {
			return err
		}
	}
	return nil
}

func (e echo) Proxy(ctx context.Context, bs *connect.BidiStream[tetherv1.Frame, tetherv1.Frame]) error {
	for {
		f, err := bs.Receive()
		if err != nil {
			e.ended <- ctx.Err()
			return nil
		}
		if err := bs.Send(f); err != nil {
			e.ended <- ctx.Err()
			return err
		}
	}
}

// The in-process client carries both kinds of call the gateway makes, a
// bidirectional stream frame by frame (as exec needs), and once closed
// fails the way an unreachable router does.
func TestClientInProcess(t *testing.T) {
	e := echo{ended: make(chan error, 4)}
	path, h := tetherv1connect.NewProxyServiceHandler(e, tunnel.HandlerOptions())
	r := &Router{Path: path, Handler: h}
	client, stop := r.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	open := &tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: &tetherv1.Open{RequestId: "r1", ClusterId: "dev", Method: "GET", Path: "/api", End: true}}}
	ss, err := client.Call(ctx, connect.NewRequest(open))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ss.Receive() {
		if ss.Msg().GetOpen().GetRequestId() != "r1" {
			t.Fatalf("Call answered %v", ss.Msg())
		}
		n++
	}
	if ss.Err() != nil || n != 2 {
		t.Fatalf("Call: %d frames, %v", n, ss.Err())
	}

	bs := client.Proxy(ctx)
	for i := range 3 {
		chunk := []byte{byte(i)}
		if err := bs.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: chunk}}}); err != nil {
			t.Fatal(err)
		}
		// Each frame comes back before the next goes: nothing waits for
		// a buffer to fill or the stream to end.
		f, err := bs.Receive()
		if err != nil || f.GetData().GetChunk()[0] != byte(i) {
			t.Fatalf("frame %d came back as %v, %v", i, f, err)
		}
	}
	_ = bs.CloseRequest()
	if _, err := bs.Receive(); err == nil {
		t.Fatal("the stream did not end")
	}
	_ = bs.CloseResponse()
	<-e.ended

	// A caller that goes away mid-stream (its request still open) ends
	// the handler, as a reset HTTP/2 stream does.
	bs = client.Proxy(ctx)
	if err := bs.Send(open); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Receive(); err != nil {
		t.Fatal(err)
	}
	_ = bs.CloseResponse()
	select {
	case err := <-e.ended:
		if err == nil {
			t.Fatal("the handler's context was not cancelled")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler went on after its caller closed the response")
	}

	stop()
	if ss, err = client.Call(ctx, connect.NewRequest(open)); err == nil {
		ss.Receive()
		err = ss.Err()
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("after close: %v, want a dial error (the gateway's sign of an unreachable router)", err)
	}
}
