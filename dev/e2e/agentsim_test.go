package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/dev/proc"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/loadtest/driver"
)

// TestAgentSimulator is the load harness's smoke run: agentsim ensures a
// few hundred clusters through the gateway in bulk, runs a real agent for
// each against a simulated cluster, all of them get their streams, and
// requests through the real gateway, routers, NATS and subscribers reach
// random ones: a GET of an object, a list, and a watch that sees events.
// SIGTERM stops the fleet cleanly. Full-size runs are make loadtest's,
// not a test's.
func TestAgentSimulator(t *testing.T) {
	const agents = 200
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(token("admin")), 0o600); err != nil {
		t.Fatal(err)
	}
	ports, err := proc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	admin := "127.0.0.1:" + strconv.Itoa(ports[0])
	start := time.Now()
	p, err := proc.Start("agentsim", env.stack.Bin("agentsim"), filepath.Join(dir, "logs"), nil,
		"--admin-addr", admin, "--gateway-url", env.stack.GatewayURL, "--gateway-ca", env.stack.CAFile, "--token-file", tokenFile,
		"--subscriber-url", strings.Join(env.stack.SubscriberURLs, ","), "--subscriber-ca", env.stack.CAFile,
		"--identity-root-key", env.stack.Identity.RootPublic, "--agents", strconv.Itoa(agents), "--prefix", "e2esim", "--tenant", "acme",
		"--start-rate", "100", "--watch-every", "100ms")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = p.Stop(30 * time.Second)
		}
		for i := range agents {
			_, _ = env.stack.Clusters().DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: fmt.Sprintf("e2esim-%05d", i)}))
		}
	})
	waitReady(t, p, admin, 2*time.Minute)
	t.Logf("%d simulated agents enrolled and connected in %v", agents, time.Since(start).Round(time.Millisecond))
	if n, ok := metricAt(t, admin, `tether_agentsim_agents{state="connected"}`); !ok || n != agents {
		t.Fatalf("%v agents connected, want %d", n, agents)
	}

	for _, i := range []int{0, 42, agents - 1} {
		cluster := fmt.Sprintf("e2esim-%05d", i)
		resp := call(t, "GET", "/clusters/"+cluster+"/api/v1/namespaces/team/configmaps/cm-00003", token("admin"), nil, nil)
		var cm struct {
			Kind     string
			Metadata struct{ Name, Namespace string }
		}
		err := json.NewDecoder(resp.Body).Decode(&cm)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || cm.Kind != "ConfigMap" || cm.Metadata.Name != "cm-00003" || cm.Metadata.Namespace != "team" {
			t.Fatalf("%s: GET a ConfigMap: %d %+v %v", cluster, resp.StatusCode, cm, err)
		}
		resp = call(t, "GET", "/clusters/"+cluster+"/api/v1/namespaces/team/configmaps?limit=4", token("admin"), nil, nil)
		var list struct{ Items []json.RawMessage }
		err = json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || len(list.Items) != 4 {
			t.Fatalf("%s: list: %d, %d items, %v", cluster, resp.StatusCode, len(list.Items), err)
		}
	}
	// A watch through every hop sees the simulated cluster's events.
	resp := call(t, "GET", "/clusters/e2esim-00007/api/v1/namespaces/team/configmaps?watch=true&timeoutSeconds=5", token("admin"), nil, nil)
	dec := json.NewDecoder(resp.Body)
	for i := range 3 {
		var ev struct{ Type string }
		if err := dec.Decode(&ev); err != nil || ev.Type != "MODIFIED" {
			t.Fatalf("watch event %d: %+v %v", i, ev, err)
		}
	}
	resp.Body.Close()
	// Another tenant's user sees none of them.
	resp = call(t, "GET", "/clusters/e2esim-00001/version", token("mallory"), nil, nil)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a user of another tenant reached a simulated cluster: %d", resp.StatusCode)
	}

	// The load harness's smoke run: open-loop GETs, lists, creates and
	// patches over every simulated cluster from two users, and watches
	// held open, through the real stack. What a run measures is make
	// loadtest's; here every request must succeed and every watch see
	// events.
	clusters := make([]string, agents)
	for i := range clusters {
		clusters[i] = fmt.Sprintf("e2esim-%05d", i)
	}
	target := driver.Target{GatewayURL: env.stack.GatewayURL, CAFile: env.stack.CAFile, Tokens: []string{token("admin"), token("alice")},
		Clusters: clusters, Namespace: "load"}
	res, err := driver.Run(t.Context(), target, driver.Mixed(100, 3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent() < 200 || res.Failed() > 0 {
		t.Fatalf("mixed load: %d sent, codes %v, errors %v", res.Sent(), res.Codes, res.Errors)
	}
	t.Logf("mixed load: %d requests, p50 %v, p99 %v", res.Sent(), time.Duration(res.All.ValueAtQuantile(50))*time.Microsecond,
		time.Duration(res.All.ValueAtQuantile(99))*time.Microsecond)
	// 15 a user: the e2e gateways let a user hold 16.
	w, err := driver.RunWatches(t.Context(), target, 30, 4*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if w.Opened != 30 || w.Broken != 0 || w.Events < 30 {
		t.Fatalf("watches: %d of 30 opened, %d broken, %d events, errors %v", w.Opened, w.Broken, w.Events, w.Errors)
	}

	stopped = true
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatalf("agentsim did not stop cleanly on SIGTERM: %v", err)
	}
}
