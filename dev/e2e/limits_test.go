package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// expectStatus checks that resp is a Kubernetes Status with code.
func expectStatus(t *testing.T, resp *http.Response, code int) status {
	t.Helper()
	defer resp.Body.Close()
	var st status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Kind != "Status" || st.Code != code || resp.StatusCode != code {
		t.Fatalf("got HTTP %d %+v (%v), want a %d Status", resp.StatusCode, st, err, code)
	}
	return st
}

// What is too big or too much is refused with a Kubernetes Status, counted,
// and leaves nothing in the cluster; one user at its limit does not stop
// another. (The e2e stack's gateway runs with a 64 KiB head limit and 16
// long-running requests per user.)
func TestLimitsAreStatus(t *testing.T) {
	refused := func(reason string) float64 {
		v, _ := metric(t, "gateway", `tether_gateway_refusals_total{reason="`+reason+`"}`)
		return v
	}

	// Too large a head is a 431 Status whichever way it is too large, over
	// HTTP/1.1 and HTTP/2 alike.
	many := http.Header{}
	for i := range 10000 {
		many[fmt.Sprintf("X-%05d", i)] = []string{"1"}
	}
	total := http.Header{}
	for i := range 5 {
		total[fmt.Sprintf("X-Part-%d", i)] = []string{strings.Repeat("p", 15000)}
	}
	for _, tt := range []struct {
		name   string
		header http.Header
		says   string
	}{
		{"10,000 small headers", many, "header fields exceed 512"},
		{"a header too long", http.Header{"X-Padding": {strings.Repeat("p", 100<<10)}}, "bytes exceeds 16384"},
		{"too large in total", total, "exceeds 65536"},
	} {
		for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
			t.Run("head: "+tt.name+" over "+proto, func(t *testing.T) {
				before := refused("head_too_large")
				resp := callOver(t, proto, "/clusters/dev/api", token("admin"), tt.header)
				if resp.Proto != proto {
					t.Fatalf("answered over %s", resp.Proto)
				}
				if st := expectStatus(t, resp, http.StatusRequestHeaderFieldsTooLarge); !strings.Contains(st.Message, tt.says) {
					t.Errorf("431 says %q, want %q", st.Message, tt.says)
				}
				if refused("head_too_large") <= before {
					t.Error("refusal not counted")
				}
			})
		}
	}

	big := func(name string) []byte {
		b, _ := json.Marshal(map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": name, "namespace": "default"},
			"data":     map[string]string{"x": strings.Repeat("x", 4<<20)},
		})
		return b
	}
	for _, tt := range []struct {
		name string
		body func(b []byte) io.Reader
	}{
		{"body with length", func(b []byte) io.Reader { return bytes.NewReader(b) }},
		// No length: the gateway counts as the bytes stream through.
		{"streamed body", func(b []byte) io.Reader { return io.MultiReader(bytes.NewReader(b)) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := "too-big-" + strings.ReplaceAll(tt.name, " ", "-")
			resp := call(t, "POST", "/clusters/dev/api/v1/namespaces/default/configmaps", token("admin"),
				http.Header{"Content-Type": {"application/json"}}, tt.body(big(name)))
			expectStatus(t, resp, http.StatusRequestEntityTooLarge)
			if _, errs, err := kubectl(t, env.direct, "", "get", "configmap", name); err == nil || !strings.Contains(errs, "NotFound") {
				t.Fatalf("%s exists in the cluster after a 413: %v %s", name, err, errs)
			}
		})
	}

	t.Run("long-running per user", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for range 16 {
			defer openWatch(t, ctx).Close()
		}
		before := refused("long_running_limit")
		resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/default/configmaps?watch=1", token("admin"), nil, nil)
		st := expectStatus(t, resp, http.StatusTooManyRequests)
		if resp.Header.Get("Retry-After") == "" || !strings.Contains(st.Message, `user "admin"`) {
			t.Errorf("429 without Retry-After or reason: %v %+v", resp.Header, st)
		}
		if refused("long_running_limit") <= before {
			t.Error("refusal not counted")
		}
		// Short requests of the same user, and another user's watch, go on.
		if resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/default/configmaps?limit=1", token("admin"), nil, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("a short request of the user at its watch limit: %s", resp.Status)
		}
		resp = call(t, "GET", "/clusters/dev/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1", token("alice"), nil, nil)
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Errorf("another user's watch refused: %s", resp.Status)
		}
		// Places come back when watches end.
		cancel()
		waitFor(t, 10*time.Second, func() bool {
			resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1", token("admin"), nil, nil)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	})

}

// callOver sends a GET to the gateway over one protocol, HTTP/1.1 or
// HTTP/2.0, on a connection of its own.
func callOver(t *testing.T, proto, path, token string, hdr http.Header) *http.Response {
	t.Helper()
	c, err := env.stack.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	tr := c.Transport.(*http.Transport)
	t.Cleanup(tr.CloseIdleConnections)
	if proto == "HTTP/1.1" {
		tr.ForceAttemptHTTP2 = false
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	req, err := http.NewRequest("GET", env.stack.GatewayURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr.Clone()
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// One user sending 10,000 requests, far more at once than its limit, gets
// 429s with Retry-After for the excess and nothing else goes wrong; another
// user's requests meanwhile go through. (The e2e gateway admits 100
// requests in progress per user.)
func TestFloodingUserDoesNotStopAnother(t *testing.T) {
	client, err := env.stack.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	get := func(user string) (int, error) {
		req, err := http.NewRequest("GET", env.stack.GatewayURL+"/clusters/dev/api/v1/namespaces/default/configmaps?limit=1", nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token(user))
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			return 0, fmt.Errorf("429 without Retry-After")
		}
		return resp.StatusCode, nil
	}

	// Warm connections and pools first: what stays for good is baseline.
	for range 3 {
		if _, err := get("admin"); err != nil {
			t.Fatal(err)
		}
	}
	base := measure(t)
	const total, workers = 10000, 200
	jobs := make(chan struct{}, total)
	for range total {
		jobs <- struct{}{}
	}
	close(jobs)
	var mu sync.Mutex
	codes := map[int]int{}
	var errs []error
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				code, err := get("admin")
				mu.Lock()
				codes[code]++
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}()
	}
	// Meanwhile, another user: alice's own RBAC answers (403 here), never
	// the gateway's limit.
	other := map[int]int{}
	flooding := make(chan struct{})
	go func() { wg.Wait(); close(flooding) }()
	for done := false; !done; {
		select {
		case <-flooding:
			done = true
		default:
			code, err := get("alice")
			if err != nil {
				t.Fatal(err)
			}
			other[code]++
		}
	}
	t.Logf("flooding user: %v; other user meanwhile: %v", codes, other)
	if len(errs) > 0 {
		t.Fatalf("%d requests failed outright, first: %v", len(errs), errs[0])
	}
	if codes[http.StatusTooManyRequests] == 0 {
		t.Error("200 at once never met the per-user limit of 100")
	}
	if codes[http.StatusOK]+codes[http.StatusTooManyRequests] != total {
		t.Errorf("answers other than 200 and 429: %v", codes)
	}
	if other[http.StatusTooManyRequests] > 0 || len(other) == 0 {
		t.Errorf("the other user was refused or never answered: %v", other)
	}
	base.expectBack(t, "the flood")
}

// A client that sends its request head slowly is cut off after the
// gateway's read-header timeout (2 s in the e2e stack), and a hundred of
// them stop nobody else.
func TestSlowHeadIsCutOff(t *testing.T) {
	base := measure(t)
	conns := make([]*tls.Conn, 100)
	for i := range conns {
		c, err := tls.Dial("tcp", strings.TrimPrefix(env.stack.GatewayURL, "https://"), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /clusters/dev/api HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	if resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/default/configmaps?limit=1", token("admin"), nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("a normal request while 100 heads trickle in: %s", resp.Status)
	}
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		// More head, too late; the server has given up on this one.
		time.Sleep(10 * time.Millisecond)
		_, _ = io.WriteString(c, "X-Slow: 1\r\n")
	}
	for i, c := range conns {
		b := make([]byte, 512)
		n, err := c.Read(b)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d still open 15 s after its head began (read %q)", i, b[:n])
		}
	}
	base.expectBack(t, "100 slow heads")
}
