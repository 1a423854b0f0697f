package tunnel

import (
	"net/http"
	"testing"
)

func TestFromHTTPDropsHopByHopAndCredentials(t *testing.T) {
	h := http.Header{}
	h.Set("Accept", "application/json")
	h.Set("Connection", "keep-alive, X-Secret")
	h.Set("X-Secret", "hop")
	h.Set("Transfer-Encoding", "chunked")
	h.Set("Authorization", "Bearer stolen")
	h.Set("Impersonate-User", "system:admin")
	h["impersonate-group"] = []string{"system:masters"} // not canonical on purpose
	h.Add("Impersonate-Extra-Scopes", "x")

	got := http.Header{}
	ToHTTP(FromHTTP(h, Credential), got, nil)
	if got.Get("Accept") != "application/json" {
		t.Errorf("Accept lost: %v", got)
	}
	for _, name := range []string{"Connection", "X-Secret", "Transfer-Encoding", "Authorization", "Impersonate-User", "Impersonate-Group", "Impersonate-Extra-Scopes"} {
		if v := got.Values(name); len(v) > 0 {
			t.Errorf("%s passed through: %v", name, v)
		}
	}
}

func TestUpgrade(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string][]string
		want    string
	}{
		{"websocket", map[string][]string{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, "websocket"},
		{"spdy among other connection tokens", map[string][]string{"Connection": {"keep-alive, upgrade"}, "Upgrade": {"SPDY/3.1"}}, "SPDY/3.1"},
		{"two upgrade lines", map[string][]string{"Connection": {"Upgrade"}, "Upgrade": {"a", "b"}}, "a, b"},
		{"upgrade header without connection token", map[string][]string{"Upgrade": {"websocket"}}, ""},
		{"connection token without upgrade header", map[string][]string{"Connection": {"Upgrade"}}, ""},
		{"plain request", map[string][]string{"Accept": {"*/*"}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, vs := range tt.headers {
				for _, v := range vs {
					h.Add(k, v)
				}
			}
			if got := Upgrade(h); got != tt.want {
				t.Errorf("Upgrade() = %q, want %q", got, tt.want)
			}
			// Whatever the message asked, the envelope never carries the
			// connection-level headers themselves.
			out := http.Header{}
			ToHTTP(FromHTTP(h, nil), out, nil)
			if out.Get("Upgrade") != "" || out.Get("Connection") != "" {
				t.Errorf("connection-level headers carried: %v", out)
			}
		})
	}
}

func TestScrubCredentials(t *testing.T) {
	h := http.Header{}
	h.Set("Authorization", "Bearer stolen")
	h["impersonate-uid"] = []string{"0"}
	h.Add("Sec-WebSocket-Protocol", "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.c3RvbGVu")
	h.Add("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
	h.Set("Accept", "*/*")
	ScrubCredentials(h)
	if got := h.Get("Sec-WebSocket-Protocol"); got != "v5.channel.k8s.io, v4.channel.k8s.io" {
		t.Errorf("subprotocols = %q", got)
	}
	for _, name := range []string{"Authorization", "Impersonate-Uid", "impersonate-uid"} {
		if len(h[name]) > 0 {
			t.Errorf("%s kept", name)
		}
	}
	if h.Get("Accept") != "*/*" {
		t.Error("Accept lost")
	}

	only := http.Header{"Sec-Websocket-Protocol": {"base64url.bearer.authorization.k8s.io.eA"}}
	ScrubCredentials(only)
	if _, ok := only["Sec-Websocket-Protocol"]; ok {
		t.Errorf("a header of only a token stays: %v", only)
	}
}
