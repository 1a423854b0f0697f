package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A response whose client stops reading holds back only itself: while a
// 25 MiB list sits unread (far more than every window and buffer between
// the kube-apiserver and the client), other requests over the same agent
// stream go through, and once the client reads again the list arrives
// whole.
func TestStalledResponseBlocksNoOne(t *testing.T) {
	const (
		ns    = "e2e-stall"
		items = 400
		size  = 64 << 10
	)
	must(t, env.direct, "", "create", "namespace", ns)
	t.Cleanup(func() { _, _, _ = kubectl(t, env.direct, "", "delete", "namespace", ns, "--wait=false") })
	if err := createConfigMaps(t, ns, items, size); err != nil {
		t.Fatal(err)
	}

	c, err := env.stack.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", env.stack.GatewayURL+"/clusters/dev/api/v1/namespaces/"+ns+"/configmaps", nil)
	req.Header.Set("Authorization", "Bearer "+token("admin"))
	req.Header.Set("Accept-Encoding", "identity")
	stalled, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Body.Close()
	if stalled.StatusCode != 200 {
		t.Fatalf("list: %s", stalled.Status)
	}
	// Let the list fill every buffer on its way, unread.
	time.Sleep(2 * time.Second)

	for i := range 20 {
		resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/"+ns+"/configmaps/cm-00007", token("admin"), nil, nil)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %d while a response is stalled: %s", i, resp.Status)
		}
	}

	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.NewDecoder(stalled.Body).Decode(&list); err != nil {
		t.Fatalf("reading the list after the stall: %v", err)
	}
	n := 0
	for _, it := range list.Items {
		if strings.HasPrefix(it.Metadata.Name, "cm-") {
			n++
		}
	}
	if n != items {
		t.Fatalf("list had %d configmaps, want %d", n, items)
	}
}
