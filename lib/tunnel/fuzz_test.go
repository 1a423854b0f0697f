package tunnel

import (
	"testing"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// FuzzDecode feeds arbitrary bytes to the frame decoder, then to a stream:
// neither may panic, and whatever Decode accepts must encode again.
func FuzzDecode(f *testing.F) {
	seeds := []*tetherv1.Frame{
		{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: &tetherv1.Open{RequestId: "r", ClusterId: "c", Method: "GET", Path: "/api", Window: 1 << 20, End: true}}},
		{StreamId: 1, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, Headers: []*tetherv1.Header{{Name: "Content-Type", Values: []string{"application/json"}}}}}},
		{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: []byte("{}"), End: true}}},
		{StreamId: 1, Kind: &tetherv1.Frame_Window{Window: &tetherv1.Window{Increment: 4096}}},
		{StreamId: 1, Kind: &tetherv1.Frame_Reset_{Reset_: &tetherv1.Reset{Code: tetherv1.ResetCode_RESET_CODE_CANCELED, Message: "gone"}}},
		{Kind: &tetherv1.Frame_Hello{Hello: &tetherv1.Hello{ClusterId: "c"}}},
		{Kind: &tetherv1.Frame_Ping{Ping: &tetherv1.Ping{Nonce: 7}}},
		{StreamId: 3, Kind: &tetherv1.Frame_Open{Open: &tetherv1.Open{RequestId: "r", ClusterId: "c", Method: "POST", Path: "/api/v1/namespaces/d/pods/p/exec", Query: "command=sh&stdin=true", Upgrade: "SPDY/3.1"}}},
		{StreamId: 3, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 101, Upgrade: "websocket", Headers: []*tetherv1.Header{{Name: "Sec-Websocket-Protocol", Values: []string{"v5.channel.k8s.io"}}}}}},
	}
	for _, s := range seeds {
		b, err := Encode(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if err != nil {
			return
		}
		if _, err := Encode(fr); err != nil {
			t.Fatalf("decoded frame does not encode: %v", err)
		}
		s := NewStream(fr.StreamId, SenderFunc(func(*tetherv1.Frame) error { return nil }), 1024)
		s.AllowPeer(1024)
		_ = s.Deliver(fr)
		_ = s.Deliver(fr)
	})
}
