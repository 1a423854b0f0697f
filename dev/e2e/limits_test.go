package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
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

	t.Run("head", func(t *testing.T) {
		before := refused("head_too_large")
		resp := call(t, "GET", "/clusters/dev/api", token("admin"), http.Header{"X-Padding": {strings.Repeat("p", 100<<10)}}, nil)
		expectStatus(t, resp, http.StatusRequestHeaderFieldsTooLarge)
		if refused("head_too_large") <= before {
			t.Error("refusal not counted")
		}
	})

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
