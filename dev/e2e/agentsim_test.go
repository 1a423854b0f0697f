package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
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

// TestLoadtestTargetsADeployedTether runs make loadtest's command as a
// platform team would against their own Tether: given only its gateways'
// URL, CA and tokens, the agents' endpoint and the processes' /metrics
// (here the shared stack stands in for the deployed one). Its agentsim
// connects a small fleet, the driver sends mixed load, and the report
// shows the sampled processes and a load that failed nothing.
func TestLoadtestTargetsADeployedTether(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "loadtest")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./dev/cmd/loadtest")
	build.Dir = env.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the loadtest command: %v\n%s", err, out)
	}
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// tokens.csv rows, as the gateway's --token-file has them.
	tokens := write("tokens.csv", fmt.Sprintf("# load users\n%s,alice,1,\"acme:developers\",\"acme\"\n%s\n", token("alice"), token("admin")))
	admin := write("admin.token", token("admin"))
	const agents, prefix = 20, "e2edeploy"
	t.Cleanup(func() {
		for i := range agents {
			_, _ = env.stack.Clusters().DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: fmt.Sprintf("%s-%05d", prefix, i)}))
		}
	})
	metrics := fmt.Sprintf("gateway=http://%s/metrics,subscriber=http://%s/metrics,subscriber-1=http://%s/metrics",
		env.stack.Admin["gateway"], env.stack.Admin["subscriber"], env.stack.Admin["subscriber-1"])
	out := filepath.Join(dir, "results")
	cmd := exec.CommandContext(t.Context(), bin, "--scenario", "mixed", "--agents", strconv.Itoa(agents), "--prefix", prefix, "--rate", "20", "--duration", "3s", "--idle", "2s",
		"--out", out, "--target", env.stack.GatewayURL, "--target-ca", env.stack.CAFile, "--target-tokens", tokens, "--target-admin-token", admin,
		"--agents-url", strings.Join(env.stack.SubscriberURLs, ","), "--agents-ca", env.stack.CAFile, "--identity-root-key", env.stack.Identity.RootPublic,
		"--metrics", metrics, "--agentsim", env.stack.Bin("agentsim"))
	cmd.Dir = env.root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("loadtest --target: %v\n%s", err, b)
	}
	b, err := os.ReadFile(filepath.Join(out, "capacity-mixed.md"))
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	for _, want := range []string{
		"a deployed Tether: gateways " + env.stack.GatewayURL,
		fmt.Sprintf("%d agents enrolled", agents),
		"| subscriber-1 | ", "| gateway | ",
		"not measured (no NATS credentials for a deployed Tether)",
		", failed 0. Codes",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	// What the deployed run cannot do, it refuses before starting.
	cmd = exec.CommandContext(t.Context(), bin, "--scenario", "storm", "--target", env.stack.GatewayURL, "--target-ca", env.stack.CAFile)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "needs --target-tokens") {
		t.Fatalf("an incomplete --target: %v\n%s", err, b)
	}
}
