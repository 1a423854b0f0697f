package compose

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-dev/tether/dev/kube"
	"github.com/tether-dev/tether/dev/proc"
	"github.com/tether-dev/tether/dev/stack"
)

// TestComposeStack is the compose stack as a user runs it: images built
// by make images, `docker compose up` from nothing, real kubectl through
// the kubeconfig it wrote (create, list, watch, exec, port-forward against
// a pod the scheduler put on the development node), a subscriber container killed under a
// read load without a read failing, and `docker compose down -v` leaving
// no container, network or volume behind.
func TestComposeStack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images and starts the whole stack in containers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	root, err := stack.RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	c := newCompose(t, root)
	kubeBin, err := kube.EnsureBinaries(ctx, root, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(kubeBin, "kubectl")

	if out, err := run(ctx, root, nil, nil, "make", "images"); err != nil {
		t.Fatalf("make images: %v\n%s", err, out)
	}
	t.Cleanup(c.down)
	if out, err := c.run(ctx, "up", "-d"); err != nil {
		c.logs()
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	kc := filepath.Join(c.hostState, "compose", "kubeconfig-admin")
	k := func(args ...string) (string, error) {
		kctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return run(kctx, root, nil, nil, kubectl, append([]string{"--kubeconfig", kc}, args...)...)
	}

	// Through the gateway, the agent and the control plane; the default
	// ServiceAccount is the controller manager's, the Node the
	// development node's.
	waitFor(t, c, 5*time.Minute, "the cluster through Tether", func() bool {
		_, err := k("get", "serviceaccount", "default", "-o", "name")
		return err == nil
	})
	waitFor(t, c, 2*time.Minute, "the development node", func() bool {
		_, err := k("wait", "--for=condition=Ready", "node/tether-dev-node", "--timeout=5s")
		return err == nil
	})

	t.Run("create and list", func(t *testing.T) {
		// No nodeName: the scheduler binds it to the development node.
		pod := `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo"},
		  "spec": {"containers": [{"name": "echo", "image": "none",
		    "command": ["/bin/podtool", "echo", "--port", "8080"]}]}}`
		if out, err := run(ctx, root, nil, strings.NewReader(pod), kubectl, "--kubeconfig", kc, "create", "-f", "-"); err != nil {
			t.Fatalf("kubectl create: %v\n%s", err, out)
		}
		if out, err := k("wait", "--for=condition=Ready", "pod/echo", "--timeout=50s"); err != nil {
			t.Fatalf("pod echo not Ready: %v\n%s", err, out)
		}
		out, err := k("get", "pods", "-o", "name")
		if err != nil || !strings.Contains(out, "pod/echo") {
			t.Fatalf("kubectl get pods: %v\n%s", err, out)
		}
	})

	t.Run("watch", func(t *testing.T) {
		lines, stderr := startKubectl(ctx, t, kubectl, kc, "get", "configmaps", "--watch", "-o", "name")
		// The list comes first; the create is seen as an event after it.
		if !lines.Scan() {
			t.Fatalf("watch printed nothing: %s", stderr.String())
		}
		if out, err := k("create", "configmap", "watched", "--from-literal=k=v"); err != nil {
			t.Fatalf("kubectl create configmap: %v\n%s", err, out)
		}
		for lines.Scan() {
			if lines.Text() == "configmap/watched" {
				return
			}
		}
		t.Fatalf("the watch ended without configmap/watched: %v %s", lines.Err(), stderr.String())
	})

	t.Run("exec", func(t *testing.T) {
		out, err := k("exec", "echo", "--", "sh", "-c", `echo "hello $((6*7))"; cat /proc/self/comm`)
		if err != nil || out != "hello 42\ncat\n" {
			t.Fatalf("kubectl exec: %v\n%q", err, out)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		portForwardEcho(ctx, t, kubectl, kc)
	})

	t.Run("a subscriber killed under load", func(t *testing.T) {
		agent := "http://" + net.JoinHostPort(c.containerIP(ctx, t, "agent"), "9090") + "/metrics"
		bothStreams := func() bool {
			v, ok := stack.MetricAt(agent, "tether_agent_stream_connected")
			return ok && v >= 2
		}
		// Both streams up, one on each subscriber: losing one leaves the
		// other serving.
		waitFor(t, c, time.Minute, "the agent's two streams", bothStreams)
		l := startReads(t, kc, 3)
		time.Sleep(3 * time.Second)
		id := c.containerID(ctx, t, "subscriber-0")
		if out, err := run(ctx, root, nil, nil, "docker", "kill", id); err != nil {
			t.Fatalf("docker kill: %v\n%s", err, out)
		}
		time.Sleep(10 * time.Second)
		reads, failed := l.stop()
		t.Logf("%d reads across the kill of subscriber-0, %d failed", reads, failed)
		if failed != 0 || reads < 20 {
			c.logs()
			t.Fatalf("%d of %d reads failed across the kill of a subscriber (want none of at least 20)", failed, reads)
		}
		// Docker leaves a killed container down; started again, it gets
		// its stream back.
		if out, err := c.run(ctx, "start", "subscriber-0"); err != nil {
			t.Fatalf("compose start subscriber-0: %v\n%s", err, out)
		}
		waitFor(t, c, time.Minute, "the agent's stream to the restarted subscriber", bothStreams)
	})

	// The development node shares the kube-apiserver's network namespace
	// through kube-net: a restarted kube-apiserver finds it again.
	t.Run("exec after a kube-apiserver restart", func(t *testing.T) {
		if out, err := run(ctx, root, nil, nil, "docker", "restart", c.containerID(ctx, t, "kube-apiserver")); err != nil {
			t.Fatalf("docker restart: %v\n%s", err, out)
		}
		var out string
		waitFor(t, c, 2*time.Minute, "exec through the restarted kube-apiserver", func() bool {
			var execErr error
			out, execErr = k("exec", "echo", "--", "sh", "-c", "echo again")
			return execErr == nil
		})
		if out != "again\n" {
			t.Fatalf("kubectl exec: %q", out)
		}
	})
}

// compose runs docker compose, or docker-compose where the plugin is
// missing, on the repository's docker-compose.yml as a project of its own.
type compose struct {
	t         *testing.T
	root      string
	cmd       []string
	project   string
	hostState string
	env       []string
}

func newCompose(t *testing.T, root string) *compose {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("the compose test needs docker (apt-get install docker.io) and a running daemon")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("the compose test needs a docker daemon it can reach: docker info: %v\n%s", err, out)
	}
	c := &compose{t: t, root: root, project: "tethertest" + strings.ToLower(rand.Text()[:8]), hostState: t.TempDir()}
	switch {
	case exec.Command("docker", "compose", "version").Run() == nil:
		c.cmd = []string{"docker", "compose"}
	case exec.Command("docker-compose", "version").Run() == nil:
		c.cmd = []string{"docker-compose"}
	default:
		t.Fatal("the compose test needs docker compose (the plugin) or docker-compose 1.29 (apt-get install docker-compose)")
	}
	port, err := proc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	c.env = []string{"TETHER_GATEWAY_PORT=" + strconv.Itoa(port[0]), "TETHER_HOST_STATE=" + c.hostState}
	t.Logf("%s, project %s, gateway on 127.0.0.1:%d", strings.Join(c.cmd, " "), c.project, port[0])
	return c
}

func (c *compose) run(ctx context.Context, args ...string) (string, error) {
	argv := append(append(append([]string{}, c.cmd[1:]...), "-p", c.project, "-f", filepath.Join(c.root, "docker-compose.yml"),
		"--project-directory", c.root), args...)
	return run(ctx, c.root, c.env, nil, c.cmd[0], argv...)
}

// logs shows the end of each container's log, for a failure.
func (c *compose) logs() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _ := c.run(ctx, "logs", "--no-color", "--tail=15")
	c.t.Logf("compose logs:\n%s", out)
}

func (c *compose) containerID(ctx context.Context, t *testing.T, service string) string {
	t.Helper()
	out, err := c.run(ctx, "ps", "-q", service)
	if id := strings.TrimSpace(out); err == nil && id != "" {
		return id
	}
	t.Fatalf("no container of %s: %v\n%s", service, err, out)
	return ""
}

func (c *compose) containerIP(ctx context.Context, t *testing.T, service string) string {
	t.Helper()
	id := c.containerID(ctx, t, service)
	out, err := run(ctx, c.root, nil, nil, "docker", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", id)
	if ip := strings.Fields(out); err == nil && len(ip) > 0 {
		return ip[0]
	}
	t.Fatalf("no address of %s: %v\n%s", service, err, out)
	return ""
}

// down removes the project with its volumes, and checks that nothing of
// it is left.
func (c *compose) down() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if c.t.Failed() {
		c.logs()
	}
	if out, err := c.run(ctx, "down", "-v", "--remove-orphans", "--timeout=10"); err != nil {
		c.t.Errorf("compose down -v: %v\n%s", err, out)
	}
	label := "label=com.docker.compose.project=" + c.project
	for _, kind := range []string{"container", "network", "volume"} {
		args := []string{kind, "ls", "-q", "--filter", label}
		if kind == "container" {
			args = []string{"ps", "-a", "-q", "--filter", label}
		}
		out, err := run(ctx, c.root, nil, nil, "docker", args...)
		if err != nil || strings.TrimSpace(out) != "" {
			c.t.Errorf("after compose down -v, %s(s) of project %s left: %v %s", kind, c.project, err, out)
		}
	}
}

// run runs a command in dir with env added to this process's, and
// returns what it printed on both outputs.
func run(ctx context.Context, dir string, env []string, stdin io.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Stdin = dir, stdin
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func waitFor(t *testing.T, c *compose, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			c.logs()
			t.Fatalf("%s not ready after %v", what, limit)
		}
		time.Sleep(time.Second)
	}
}

// startKubectl starts a kubectl that runs until the test ends (a watch,
// a port-forward) and returns its output's lines and its errors.
func startKubectl(ctx context.Context, t *testing.T, kubectl, kc string, args ...string) (*bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kc}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	return bufio.NewScanner(stdout), stderr
}

// portForwardEcho forwards a local port to the echo pod's 8080 and checks
// that what it sends comes back.
func portForwardEcho(ctx context.Context, t *testing.T, kubectl, kc string) {
	lines, stderr := startKubectl(ctx, t, kubectl, kc, "port-forward", "pod/echo", ":8080")
	forwarding := regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)
	var port string
	for port == "" && lines.Scan() {
		if m := forwarding.FindStringSubmatch(lines.Text()); m != nil {
			port = m[1]
		}
	}
	if port == "" {
		t.Fatalf("kubectl port-forward never said where it listens: %s", stderr.String())
	}
	go func() {
		for lines.Scan() { // "Handling connection for …"
		}
	}()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	want := "through tether and back\n"
	if _, err := io.WriteString(conn, want); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || got != want {
		t.Fatalf("echo through port-forward: %q, %v (kubectl: %s)", got, err, stderr.String())
	}
}

// reads is a load of GETs through the gateway, as the kubeconfig's user.
type reads struct {
	done        chan struct{}
	wg          sync.WaitGroup
	ok, failed  atomic.Int64
	firstFailMu sync.Mutex
	firstFail   string
	t           *testing.T
}

func startReads(t *testing.T, kubeconfig string, clients int) *reads {
	t.Helper()
	server, token, client := clientFor(t, kubeconfig)
	l := &reads{done: make(chan struct{}), t: t}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.done:
					return
				default:
				}
				req, err := http.NewRequest(http.MethodGet, server+"/api/v1/namespaces/default/configmaps", nil)
				if err != nil {
					l.fail(err.Error())
					return
				}
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					l.fail(err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					l.fail(fmt.Sprintf("%s: %.200s", resp.Status, body))
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

func (l *reads) fail(why string) {
	l.failed.Add(1)
	l.firstFailMu.Lock()
	defer l.firstFailMu.Unlock()
	if l.firstFail == "" {
		l.firstFail = why
		l.t.Logf("first failed read: %s", why)
	}
}

func (l *reads) stop() (reads, failed int64) {
	close(l.done)
	l.wg.Wait()
	return l.ok.Load() + l.failed.Load(), l.failed.Load()
}

// clientFor reads the server, token and CA of a kubeconfig that pki
// wrote (JSON, the CA inline).
func clientFor(t *testing.T, path string) (server, token string, client *http.Client) {
	t.Helper()
	server, token, ca := readKubeconfig(t, path)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("kubeconfig %s: no CA", path)
	}
	client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true,
	}}
	return server, token, client
}

// readKubeconfig is the one cluster's server and CA, and the one user's
// token, of a kubeconfig that pki wrote.
func readKubeconfig(t *testing.T, path string) (server, token string, ca []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `json:"server"`
				CA     []byte `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User struct {
				Token string `json:"token"`
			} `json:"user"`
		} `json:"users"`
	}
	if err := json.Unmarshal(b, &kc); err != nil || len(kc.Clusters) != 1 || len(kc.Users) != 1 {
		t.Fatalf("kubeconfig %s: %v\n%s", path, err, b)
	}
	return kc.Clusters[0].Cluster.Server, kc.Users[0].User.Token, kc.Clusters[0].Cluster.CA
}
