package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-dev/tether/dev/stack"
)

// noCluster is an id no cluster has, as long as "dev", so that what the
// gateway says about either is the same length.
const noCluster = "zzz"

var hostsOnce struct {
	sync.Once
	path string
	err  error
}

// hostsFile names the clusters' hosts for kubectl (ADR 009).
func hostsFile(t *testing.T) string {
	t.Helper()
	hostsOnce.Do(func() { hostsOnce.path, hostsOnce.err = env.stack.HostsFile(stack.ClusterID, noCluster) })
	if hostsOnce.err != nil {
		t.Fatal(hostsOnce.err)
	}
	return hostsOnce.path
}

// hostCommand is kubectl (or another binary) with args, resolving the
// clusters' host names.
func hostCommand(t *testing.T, ctx context.Context, bin string, args ...string) *exec.Cmd {
	t.Helper()
	name, argv, err := stack.HostsCommand(hostsFile(t), bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return exec.CommandContext(ctx, name, argv...)
}

// kubectlByHost runs kubectl with kubeconfig where the clusters' host
// names resolve, and returns stdout, stderr and the error.
func kubectlByHost(t *testing.T, kubeconfig string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := hostCommand(t, ctx, env.kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func hostKubeconfig(t *testing.T, user, cluster string) string {
	t.Helper()
	p, err := env.stack.HostKubeconfigFor(user+"-"+cluster, token(user), cluster)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// klogHead is what differs between two runs of kubectl's log lines: time
// and process id.
var klogHead = regexp.MustCompile(`(?m)^[IWEF][0-9]{4} [0-9:.]+ +[0-9]+ `)

var serving = regexp.MustCompile(`Starting to serve on (127\.0\.0\.1:[0-9]+)`)

// kubectlProxy starts `kubectl proxy` in front of kubeconfig on a free
// loopback port and returns its URL.
func kubectlProxy(t *testing.T, kubeconfig string, byHost bool) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	args := []string{"--kubeconfig", kubeconfig, "proxy", "--port=0", "--address=127.0.0.1"}
	cmd := exec.CommandContext(ctx, env.kubectl, args...)
	if byHost {
		cmd = hostCommand(t, ctx, env.kubectl, args...)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := serving.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		close(found)
	}()
	select {
	case addr, ok := <-found:
		if !ok {
			t.Fatalf("kubectl proxy ended before serving: %s", stderr.String())
		}
		return "http://" + addr
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl proxy did not start: %s", stderr.String())
	}
	return ""
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, b
}

// TestKubectlProxyByHost: kubectl proxy drops the path of a kubeconfig's
// server, so in front of Tether it needs a cluster addressed by host name;
// then it serves what the same proxy serves in front of the kube-apiserver.
func TestKubectlProxyByHost(t *testing.T) {
	through := kubectlProxy(t, hostKubeconfig(t, "admin", stack.ClusterID), true)
	direct := kubectlProxy(t, env.direct, false)

	paths := []string{"/version", "/api", "/apis/apps/v1", "/api/v1/namespaces/default", "/openapi/v3", "/api/v1/namespaces/no-such-namespace"}
	// One of the OpenAPI v3 documents the discovery document points to.
	code, b := get(t, direct+"/openapi/v3")
	var disco struct {
		Paths map[string]struct {
			URL string `json:"serverRelativeURL"`
		} `json:"paths"`
	}
	if code != 200 || json.Unmarshal(b, &disco) != nil || disco.Paths["api/v1"].URL == "" {
		t.Fatalf("direct /openapi/v3: %d %.300s", code, b)
	}
	paths = append(paths, disco.Paths["api/v1"].URL)
	for _, p := range paths {
		dc, db := get(t, direct+p)
		tc, tb := get(t, through+p)
		if dc != tc || !bytes.Equal(db, tb) {
			t.Errorf("GET %s through kubectl proxy: direct %d %.300s\nTether %d %.300s", p, dc, db, tc, tb)
		}
	}

	// kubectl itself, pointed at each proxy.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"get", "--raw", "/api/v1/namespaces/kube-system"},
		{"get", "ns", "-o", "name"},
		{"api-resources", "--api-group=apps", "-o", "name"},
	} {
		d := must(t, empty, "", append([]string{"--server", direct}, args...)...)
		th := must(t, empty, "", append([]string{"--server", through}, args...)...)
		if d != th || d == "" {
			t.Errorf("kubectl %s through kubectl proxy: direct %.300q, Tether %.300q", strings.Join(args, " "), d, th)
		}
	}
}

// TestOpenAPIV3ByHost: kubectl (the one on PATH) reads OpenAPI v3 through a
// cluster addressed by host name, in a kubeconfig tetherctl wrote, as it
// does directly.
func TestOpenAPIV3ByHost(t *testing.T) {
	out, err := exec.Command(env.stack.Bin("tetherctl"), "cluster", "kubeconfig", stack.ClusterID, "--address", "host",
		"--cluster-domain", stack.ClusterDomain, "--kubeconfig", kubeconfig(t, "admin")).Output()
	if err != nil {
		t.Fatalf("tetherctl cluster kubeconfig: %v", err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, out, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"get", "--raw", "/openapi/v3"},
		{"explain", "deployments.spec.strategy"},
	} {
		want := must(t, env.direct, "", args...)
		got, errs, err := kubectlByHost(t, kc, args...)
		if err != nil || got != want {
			t.Errorf("kubectl %s by host: %v %s\ngot %.300q\nwant %.300q", strings.Join(args, " "), err, errs, got, want)
		}
	}
}

// TestHostAddressingKeepsTenantsApart: another tenant's cluster named by
// host looks exactly like a cluster that does not exist, by host or by
// path; the host names nothing a token does not already reach.
func TestHostAddressingKeepsTenantsApart(t *testing.T) {
	port := env.stack.GatewayURL[strings.LastIndexByte(env.stack.GatewayURL, ':'):]
	// The Host decides; the connection goes to the gateway's address.
	send := func(host, path, user string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest("GET", env.stack.GatewayURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Authorization", "Bearer "+token(user))
		resp, err := gatewayClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	sameHead := func(what string, a, b http.Header) {
		t.Helper()
		for _, h := range []http.Header{a, b} {
			h.Del("Date")
			h.Del("X-Tether-Request-Id")
		}
		if ja, jb := mustJSON(t, a), mustJSON(t, b); ja != jb {
			t.Errorf("%s: headers differ:\n%s\n%s", what, ja, jb)
		}
	}

	if code, _, body := send("dev.tether.localhost"+port, "/api/v1/namespaces/default", "admin"); code != 200 || !strings.Contains(body, `"name":"default"`) {
		t.Fatalf("admin by host: %d %.300s", code, body)
	}
	otherCode, otherHead, other := send("dev.tether.localhost"+port, "/api", "mallory")
	noneCode, noneHead, none := send(noCluster+".tether.localhost"+port, "/api", "mallory")
	none = strings.ReplaceAll(none, noCluster, "dev")
	if otherCode != 404 || otherCode != noneCode || other != none {
		t.Errorf("another tenant's cluster by host: %d %s\nno cluster by host: %d %s", otherCode, other, noneCode, none)
	}
	sameHead("another tenant's cluster and none, by host", otherHead, noneHead)
	pathCode, pathHead, byPath := send("127.0.0.1"+port, "/clusters/dev/api", "mallory")
	if pathCode != otherCode || byPath != other {
		t.Errorf("another tenant's cluster by path: %d %s; by host %d %s", pathCode, byPath, otherCode, other)
	}
	sameHead("another tenant's cluster, by path and by host", pathHead, otherHead)

	// A host below the domain that is not one cluster id is no cluster,
	// and it never falls back to the path.
	for _, host := range []string{"dev.dev.tether.localhost", "dev_1.tether.localhost", "*.tether.localhost"} {
		code, _, body := send(host+port, "/clusters/dev/api", "admin")
		if code != 404 || !strings.Contains(body, `"kind":"Status"`) || strings.Contains(body, "APIVersions") {
			t.Errorf("host %s: %d %.300s", host, code, body)
		}
	}
	// The gateway's own name is not a cluster's: the path decides.
	if code, _, body := send("tether.localhost"+port, "/clusters/dev/api", "admin"); code != 200 || !strings.Contains(body, "APIVersions") {
		t.Errorf("the gateway's own name, by path: %d %.300s", code, body)
	}

	// kubectl, as mallory, sees the same for either cluster. Each starts
	// with an empty discovery cache: kubectl keys it by server, not user,
	// and admin's runs filled dev's.
	gotOther, errOther, err1 := kubectlByHost(t, hostKubeconfig(t, "mallory", stack.ClusterID), "get", "ns", "--cache-dir", t.TempDir())
	gotNone, errNone, err2 := kubectlByHost(t, hostKubeconfig(t, "mallory", noCluster), "get", "ns", "--cache-dir", t.TempDir())
	errOther, errNone = klogHead.ReplaceAllString(errOther, ""), klogHead.ReplaceAllString(strings.ReplaceAll(errNone, noCluster, "dev"), "")
	if err1 == nil || err2 == nil || gotOther != gotNone || errOther != errNone {
		t.Errorf("kubectl as mallory by host: dev %v %q %q; none %v %q %q", err1, gotOther, errOther, err2, gotNone, errNone)
	}

	// tetherctl reaches the gateway's ClusterService from a kubeconfig
	// that names a cluster by host.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := hostCommand(t, ctx, env.stack.Bin("tetherctl"), "cluster", "list", "--kubeconfig", hostKubeconfig(t, "admin", stack.ClusterID)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), stack.ClusterID) {
		t.Errorf("tetherctl cluster list by host: %v\n%s", err, out)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
