package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tether-dev/tether/lib/tunnel"
)

func TestLongRunning(t *testing.T) {
	tests := []struct {
		target  string
		upgrade string
		want    bool
	}{
		{"/clusters/c/api/v1/pods", "", false},
		{"/clusters/c/api/v1/pods?watch=true", "", true},
		{"/clusters/c/api/v1/pods?watch=1", "", true},
		{"/clusters/c/api/v1/pods?watch=false", "", false},
		{"/clusters/c/api/v1/watch/pods", "", true},
		{"/clusters/c/api/v1/namespaces/d/pods/p/log?follow=true", "", true},
		{"/clusters/c/api/v1/namespaces/d/pods/p/exec?command=sh", "SPDY/3.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			if tt.upgrade != "" {
				tunnel.SetUpgrade(r.Header, tt.upgrade)
			}
			_, rest, err := ParsePath(r.URL.EscapedPath())
			if err != nil {
				t.Fatal(err)
			}
			if got := longRunning(r.URL.Query(), rest, tunnel.Upgrade(r.Header) != ""); got != tt.want {
				t.Errorf("longRunning = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAdmissionPerUserAndCluster(t *testing.T) {
	a := admission{user: newCounter(2), cluster: newCounter(3)}
	var releases []func()
	take := func(user, cluster string) bool {
		t.Helper()
		release, refusal := a.admit(user, cluster)
		if refusal != "" {
			return false
		}
		releases = append(releases, release)
		return true
	}
	if !take("ann", "c1") || !take("ann", "c1") {
		t.Fatal("two requests within the user limit refused")
	}
	if take("ann", "c2") {
		t.Fatal("a third request of one user admitted")
	}
	if !take("bob", "c1") {
		t.Fatal("another user refused while the cluster has room")
	}
	if take("cy", "c1") {
		t.Fatal("a fourth request to one cluster admitted")
	}
	// A refusal by the cluster must not keep the user's place.
	if !take("cy", "c2") || !take("cy", "c2") {
		t.Fatal("a user refused by one cluster lost places")
	}
	for _, r := range releases {
		r()
	}
	if len(a.user.n) != 0 || len(a.cluster.n) != 0 {
		t.Errorf("counters remember keys with nothing in flight: %v %v", a.user.n, a.cluster.n)
	}
	if release, refusal := (admission{user: newCounter(0), cluster: newCounter(0)}).admit("x", "y"); refusal != "" {
		t.Error("zero limits refused")
	} else {
		release()
	}
}

// headers makes n header fields, each a distinct name and a one-byte
// value: a small head in bytes, large in count.
func headers(n int) http.Header {
	h := http.Header{}
	for i := range n {
		h[fmt.Sprintf("X-%05d", i)] = []string{"1"}
	}
	return h
}

func TestHeadTooLarge(t *testing.T) {
	l := Limits{MaxHeaderBytes: 64 << 10}
	long := strings.Repeat("x", tunnel.MaxHeaderValue+1)
	for _, tt := range []struct {
		name   string
		header http.Header
		want   string // in the refusal; "" for none
	}{
		{"a few headers", http.Header{"Accept": {"application/json"}, "User-Agent": {"kubectl"}}, ""},
		{"512 fields", headers(512), ""},
		{"513 fields", headers(513), "513 header fields exceed 512"},
		{"10,000 small headers", headers(10000), "10000 header fields exceed 512"},
		{"10,000 values of one name", http.Header{"X": strings.Split(strings.Repeat("1", 10000), "")}, "10000 header fields exceed 512"},
		{"a value at the field limit", http.Header{"X-Long": {long[1:]}}, ""},
		{"a value over the field limit", http.Header{"X-Long": {long}}, "exceeds 16384"},
		{"a name over the field limit", http.Header{long: {"1"}}, "a header name of 16385 bytes"},
		// Credentials are dropped before the envelope: only the total
		// bounds them (an ID token with hundreds of groups).
		{"a long bearer token", http.Header{"Authorization": {"Bearer " + long}}, ""},
		{"a long websocket bearer token", http.Header{"Sec-Websocket-Protocol": {"base64url.bearer.authorization.k8s.io." + long}}, ""},
		{"over the total", http.Header{"A": {long[:16000]}, "B": {long[:16000]}, "C": {long[:16000]}, "D": {long[:16000]}, "E": {long[:16000]}}, "exceeds 65536"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/clusters/c/api", nil)
			r.Header = tt.header
			got := l.headTooLarge(r)
			if (got == "") != (tt.want == "") || !strings.Contains(got, tt.want) {
				t.Errorf("headTooLarge = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, tt := range []struct {
		bytes int
		ok    bool
	}{{0, false}, {-1, false}, {1, true}, {tunnel.MaxHead, true}, {tunnel.MaxHead + 1, false}} {
		if err := (Limits{MaxHeaderBytes: tt.bytes}).validate(); (err == nil) != tt.ok {
			t.Errorf("MaxHeaderBytes %d: %v", tt.bytes, err)
		}
	}
}

// A head too large in any way is a 431 Status over HTTP/1.1 and HTTP/2
// alike, from an http.Server configured as the gateway's: 10,000 small
// headers stay below where the server would cut the client off itself.
func TestHeadTooLargeIsAStatus(t *testing.T) {
	g := newTestGateway(t)
	srv := httptest.NewUnstartedServer(g)
	srv.EnableHTTP2 = true
	srv.Config.MaxHeaderBytes = g.cfg.Limits.ServerHeadBytes()
	srv.StartTLS()
	defer srv.Close()
	for _, tt := range []struct {
		name   string
		header http.Header
		want   string
	}{
		// The client adds its own few (Authorization, User-Agent).
		{"10,000 small headers", headers(10000), "header fields exceed 512"},
		{"a field too long", http.Header{"X-Long": {strings.Repeat("x", 20000)}}, "exceeds 16384"},
		{"too large in total", func() http.Header {
			h := http.Header{}
			for i := range 9 {
				h.Set(fmt.Sprintf("X-%d", i), strings.Repeat("x", 16000))
			}
			return h
		}(), "exceeds 131072"},
	} {
		for _, h2 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, HTTP/2 %v", tt.name, h2), func(t *testing.T) {
				tr := srv.Client().Transport.(*http.Transport).Clone()
				if !h2 {
					tr.Protocols = new(http.Protocols)
					tr.Protocols.SetHTTP1(true)
					tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
				}
				defer tr.CloseIdleConnections()
				req, err := http.NewRequest("GET", srv.URL+"/clusters/c/api", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header = tt.header.Clone()
				req.Header.Set("Authorization", "Bearer x")
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if got := resp.ProtoMajor == 2; got != h2 {
					t.Fatalf("served over %s", resp.Proto)
				}
				var st struct {
					Kind, Reason, Message string
					Code                  int
				}
				if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
					t.Fatalf("%s: not a Status: %v", resp.Status, err)
				}
				if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || st.Kind != "Status" || st.Code != http.StatusRequestHeaderFieldsTooLarge || !strings.Contains(st.Message, tt.want) {
					t.Errorf("got %s %+v, want a 431 Status saying %q", resp.Status, st, tt.want)
				}
			})
		}
	}
}
