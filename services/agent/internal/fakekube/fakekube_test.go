package fakekube

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func do(t *testing.T, c *Cluster, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "https://sim.invalid"+url, strings.NewReader(body))
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: not JSON: %v", method, url, err)
	}
	return resp.StatusCode, out
}

func TestCluster(t *testing.T) {
	f, err := NewFleet(Config{Objects: 5, ObjectBytes: 10})
	if err != nil {
		t.Fatal(err)
	}
	a, b := f.Cluster(), f.Cluster()
	for _, tc := range []struct {
		method, url, body string
		code              int
		kind, reason      string
	}{
		{"GET", "/version", "", 200, "", ""},
		{"GET", "/api/v1/namespaces/team/configmaps/cm-00003", "", 200, "ConfigMap", ""},
		{"GET", "/api/v1/namespaces/team/configmaps/cm-00005", "", 404, "Status", "NotFound"},
		{"GET", "/api/v1/namespaces/team/configmaps/cm-3", "", 404, "Status", "NotFound"},
		{"GET", "/api/v1/namespaces/team/configmaps", "", 200, "ConfigMapList", ""},
		{"GET", "/api/v1/namespaces/team/secrets", "", 404, "Status", "NotFound"},
		{"POST", "/api/v1/namespaces/team/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"new"}}`, 201, "ConfigMap", ""},
		{"POST", "/api/v1/namespaces/team/configmaps", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"new"}}`, 409, "Status", "AlreadyExists"},
		{"POST", "/api/v1/namespaces/team/configmaps", `{"metadata":{}}`, 422, "Status", "Invalid"},
		{"POST", "/api/v1/namespaces/team/configmaps", `not json`, 400, "Status", "BadRequest"},
		{"PATCH", "/api/v1/namespaces/team/configmaps/cm-00001", `{"data":{"a":"b"}}`, 200, "ConfigMap", ""},
		{"DELETE", "/api/v1/namespaces/team/configmaps/cm-00002", "", 200, "Status", ""},
		{"GET", "/api/v1/namespaces/team/configmaps/cm-00002", "", 404, "Status", "NotFound"},
		{"PUT", "/api/v1/namespaces/team/configmaps/cm-00001", "{}", 405, "Status", "MethodNotAllowed"},
	} {
		code, out := do(t, a, tc.method, tc.url, tc.body)
		if code != tc.code || (tc.kind != "" && out["kind"] != tc.kind) || (tc.reason != "" && out["reason"] != tc.reason) {
			t.Errorf("%s %s: %d %v %v, want %d %s %s", tc.method, tc.url, code, out["kind"], out["reason"], tc.code, tc.kind, tc.reason)
		}
	}
	// The list holds what a's writes left: cm-00002 deleted, "new" added.
	_, list := do(t, a, "GET", "/api/v1/namespaces/team/configmaps", "")
	if items := list["items"].([]any); len(items) != 5 {
		t.Errorf("a's list: %d items, want 5", len(items))
	}
	_, limited := do(t, a, "GET", "/api/v1/namespaces/team/configmaps?limit=2", "")
	if items := limited["items"].([]any); len(items) != 2 {
		t.Errorf("limit=2: %d items", len(items))
	}
	// b shares the starting objects, not a's writes.
	if code, _ := do(t, b, "GET", "/api/v1/namespaces/team/configmaps/cm-00002", ""); code != 200 {
		t.Errorf("b lost cm-00002 to a's delete: %d", code)
	}
	if code, _ := do(t, b, "GET", "/api/v1/namespaces/team/configmaps/new", ""); code != 404 {
		t.Errorf("b has a's new object: %d", code)
	}
}

func TestWatch(t *testing.T) {
	f, _ := NewFleet(Config{Objects: 2, WatchEvery: 10 * time.Millisecond})
	c := f.Cluster()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://sim.invalid/api/v1/namespaces/x/configmaps?watch=true", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	last := ""
	for i := range 3 {
		if !sc.Scan() {
			t.Fatalf("event %d: %v", i, sc.Err())
		}
		var ev struct {
			Type   string
			Object struct {
				Metadata struct{ ResourceVersion, Namespace string }
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Type != "MODIFIED" || ev.Object.Metadata.Namespace != "x" || ev.Object.Metadata.ResourceVersion == last {
			t.Fatalf("event %d: %s (%v)", i, sc.Bytes(), err)
		}
		last = ev.Object.Metadata.ResourceVersion
	}
	cancel()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("the watch did not end with its caller: %v", err)
	}
	// timeoutSeconds ends a watch by itself.
	req, _ = http.NewRequest("GET", "https://sim.invalid/api/v1/namespaces/x/configmaps?watch=1&timeoutSeconds=1", nil)
	resp, _ = c.RoundTrip(req)
	start := time.Now()
	_, _ = io.ReadAll(resp.Body)
	if time.Since(start) > 5*time.Second {
		t.Fatal("timeoutSeconds did not end the watch")
	}
}
