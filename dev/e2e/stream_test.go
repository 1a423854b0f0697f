package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/tether-dev/tether/dev/echo"
)

// protocols are the two ways kubectl carries exec, attach, cp and
// port-forward; name is how the gateway's upgrade counter labels each.
var protocols = []struct {
	name string
	env  []string
}{
	{"websocket", nil},
	{"spdy", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false", "KUBECTL_PORT_FORWARD_WEBSOCKETS=false"}},
}

// forEachProtocol runs f once per protocol, and checks that the gateway
// really switched to that protocol, so neither case passes by falling back
// to the other.
func forEachProtocol(t *testing.T, f func(t *testing.T, proto string, env []string)) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			// Registered first, so it runs after the test's own cleanups
			// (a port-forward stops in one).
			t.Cleanup(func() { noUpgradedLeft(t) })
			series := `tether_gateway_upgrades_total{protocol="` + p.name + `"}`
			before, _ := metric(t, "gateway", series)
			f(t, p.name, p.env)
			if after, _ := metric(t, "gateway", series); after <= before {
				t.Errorf("kubectl never switched to %s through the gateway", p.name)
			}
		})
	}
}

// noUpgradedLeft checks that every upgraded connection has ended at every
// hop once its client is done: a session whose client went away must not
// linger anywhere.
func noUpgradedLeft(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		gw := gauge(t, "gateway", "tether_gateway_upgraded_connections")
		ag := gauge(t, "agent", "tether_agent_upgraded_connections")
		if gw == 0 && ag == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upgraded connections still open 5 s after their clients finished: gateway %v, agent %v", gw, ag)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kubectlEnv runs kubectl through Tether as admin with extra environment,
// and returns stdout, stderr and the error (an *exec.ExitError carries the
// exit code).
func kubectlEnv(t *testing.T, extraEnv []string, stdin io.Reader, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.kubectl, append([]string{"--kubeconfig", kubeconfig(t, "admin")}, args...)...)
	cmd.Env = append(os.Environ(), extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &errb, stdin
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// container is what a test pod runs on the development node: a host
// process, so paths in commands are host paths.
type container struct {
	command          []string
	stdin, stdinOnce bool
	tty              bool
}

// startPod creates a pod on the development node straight through the
// kube-apiserver and waits until it runs. The pod is deleted after the test.
func startPod(t *testing.T, name string, c container) {
	t.Helper()
	t.Cleanup(func() {
		_, _, _ = kubectl(t, env.direct, "", "delete", "pod", name, "--wait=false", "--ignore-not-found")
	})
	createPod(t, name, c)
}

// createPod is startPod for pods that tests share: they last as long as
// the stack.
func createPod(t *testing.T, name string, c container) {
	t.Helper()
	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec": map[string]any{
			"nodeName":                      env.stack.NodeName,
			"restartPolicy":                 "Never",
			"terminationGracePeriodSeconds": 1,
			"automountServiceAccountToken":  false,
			"containers": []map[string]any{{
				"name": "main", "image": "tether.dev/host-process", "command": c.command,
				"stdin": c.stdin, "stdinOnce": c.stdinOnce, "tty": c.tty,
			}},
		},
	}
	b, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	must(t, env.direct, string(b), "apply", "-f", "-")
	waitFor(t, 30*time.Second, func() bool {
		out, _, _ := kubectl(t, env.direct, "", "get", "pod", name, "-o", "jsonpath={.status.phase}")
		return out == "Running"
	})
}

var sleeperOnce sync.Once

// sleeper is a long-running pod to exec into, shared by the tests.
func sleeper(t *testing.T) string {
	t.Helper()
	const name = "sleeper"
	sleeperOnce.Do(func() {
		createPod(t, name, container{command: []string{"sleep", "3600"}})
	})
	return name
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// exec with stdin: input comes back in order, stdout and stderr stay
// apart, and the remote exit code becomes kubectl's.
func TestExec(t *testing.T) {
	pod := sleeper(t)
	forEachProtocol(t, func(t *testing.T, _ string, penv []string) {
		out, errs, err := kubectlEnv(t, penv, strings.NewReader("hello\nworld\n"), "exec", "-i", pod, "--", "sh", "-c", "cat; echo to-stderr >&2")
		if err != nil {
			t.Fatalf("exec: %v\n%s", err, errs)
		}
		if out != "hello\nworld\n" {
			t.Errorf("stdout = %q, want the input echoed", out)
		}
		if !strings.Contains(errs, "to-stderr") || strings.Contains(out, "to-stderr") {
			t.Errorf("stderr = %q, stdout = %q: streams mixed", errs, out)
		}

		// Bytes arrive whole and in order, and stdin's end ends cat.
		payload := make([]byte, 4<<20)
		_, _ = rand.Read(payload)
		out, errs, err = kubectlEnv(t, penv, bytes.NewReader(payload), "exec", "-i", pod, "--", "cat")
		if err != nil {
			t.Fatalf("exec cat: %v\n%s", err, errs)
		}
		if !bytes.Equal([]byte(out), payload) {
			t.Errorf("4 MiB through cat came back as %d bytes, not the same", len(out))
		}

		_, errs, err = kubectlEnv(t, penv, nil, "exec", pod, "--", "sh", "-c", "exit 3")
		if got := exitCode(err); got != 3 {
			t.Errorf("exit code = %d (%v, %s), want 3", got, err, errs)
		}
	})
}

// attach reaches a running container's stdin and stdout; with stdinOnce
// the end of our input ends the container, and with it the session.
func TestAttach(t *testing.T) {
	forEachProtocol(t, func(t *testing.T, proto string, penv []string) {
		name := "attach-" + proto
		startPod(t, name, container{
			command: []string{"sh", "-c", `while read l; do echo "got:$l"; done; echo bye`},
			stdin:   true, stdinOnce: true,
		})
		out, errs, err := kubectlEnv(t, penv, strings.NewReader("a\nb\n"), "attach", "-i", name, "-c", "main")
		if err != nil {
			t.Fatalf("attach: %v\n%s", err, errs)
		}
		if !strings.Contains(out, "got:a\ngot:b\nbye\n") {
			t.Errorf("attach output = %q", out)
		}
	})
}

// logs -f streams lines while the container writes them and ends when its
// log ends; --tail and --since select; a missing previous instance is a
// Status from the node, passed through unchanged.
func TestLogs(t *testing.T) {
	stop := filepath.Join(env.dir, "logs-stop")
	startPod(t, "logger", container{command: []string{"sh", "-c",
		`i=0; while [ ! -e "$0" ]; do i=$((i+1)); echo "line $i"; sleep 0.1; done; echo last`, stop}})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.kubectl, "--kubeconfig", kubeconfig(t, "admin"), "logs", "-f", "logger")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		// The container keeps writing until told to stop, so a line seen
		// now was streamed, not delivered with the end of the log.
		if len(lines) == 3 {
			if err := os.WriteFile(stop, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("logs -f: %v\n%s", err, errb.String())
	}
	if len(lines) < 4 || lines[len(lines)-1] != "last" {
		t.Fatalf("logs -f gave %q, want lines then last", lines)
	}
	for i, l := range lines[:len(lines)-1] {
		if want := fmt.Sprintf("line %d", i+1); l != want {
			t.Fatalf("line %d is %q, want %q: lost, repeated or reordered", i, l, want)
		}
	}
	n := len(lines) - 1
	waitFor(t, 30*time.Second, func() bool {
		out, _, _ := kubectl(t, env.direct, "", "get", "pod", "logger", "-o", "jsonpath={.status.phase}")
		return out == "Succeeded"
	})

	tail := must(t, kubeconfig(t, "admin"), "", "logs", "logger", "--tail=2")
	if want := fmt.Sprintf("line %d\nlast\n", n); tail != want {
		t.Errorf("--tail=2 gave %q, want %q", tail, want)
	}
	if since := must(t, kubeconfig(t, "admin"), "", "logs", "logger", "--since=1h"); strings.Count(since, "\n") != n+1 {
		t.Errorf("--since=1h gave %d lines, want %d", strings.Count(since, "\n"), n+1)
	}

	_, errs, err := kubectl(t, kubeconfig(t, "admin"), "", "logs", "logger", "--previous")
	if err == nil || !strings.Contains(errs, `previous terminated container "main" in pod "logger" not found`) {
		t.Errorf("--previous: %v, %q", err, errs)
	}
	resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/default/pods/logger/log?previous=true", token("admin"), nil, nil)
	defer resp.Body.Close()
	var st struct {
		Kind    string `json:"kind"`
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Kind != "Status" || st.Code != 400 || resp.StatusCode != 400 {
		t.Errorf("previous log: HTTP %d, %+v, %v; want a 400 Status", resp.StatusCode, st, err)
	}
}

var echoOnce sync.Once

// echoPod runs a TCP echo server on port 8080 of its pod.
func echoPod(t *testing.T) string {
	t.Helper()
	const name = "echo"
	echoOnce.Do(func() {
		createPod(t, name, container{command: []string{env.stack.Bin("podtool"), "echo", "--port", "8080"}})
	})
	return name
}

// portForward starts kubectl port-forward to port 8080 of pod and returns
// the local address; the forward stops with the test.
func portForward(t *testing.T, penv []string, pod string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, env.kubectl, "--kubeconfig", kubeconfig(t, "admin"), "port-forward", "pod/"+pod, ":8080")
	cmd.Env = append(os.Environ(), penv...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb lockedBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) -> 8080`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	select {
	case a := <-addr:
		return a
	case <-time.After(30 * time.Second):
		t.Fatalf("port-forward did not start: %s", errb.String())
	}
	return ""
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// port-forward: 100 MB each way, 20 connections at once through one
// forward, and a forward left idle through several keepalive periods.
func TestPortForward(t *testing.T) {
	pod := echoPod(t)
	forEachProtocol(t, func(t *testing.T, _ string, penv []string) {
		addr := portForward(t, penv, pod)
		dial := func() *net.TCPConn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c.(*net.TCPConn)
		}

		if err := echo.RoundTrip(dial(), 100<<20); err != nil {
			t.Fatalf("100 MB each way: %v", err)
		}

		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for range 20 {
			c := dial()
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- echo.RoundTrip(c, 1<<20)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("one of 20 concurrent connections: %v", err)
			}
		}

		// The stack's keepalives are 1 s and its idle probes 2 s: this
		// outlasts several of each with nothing flowing.
		idle := dial()
		time.Sleep(7 * time.Second)
		if _, err := idle.Write([]byte("still there?")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len("still there?"))
		_ = idle.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(idle, buf); err != nil || string(buf) != "still there?" {
			t.Fatalf("idle connection after keepalive periods: %q, %v", buf, err)
		}
		if err := echo.RoundTrip(dial(), 64<<10); err != nil {
			t.Fatalf("new connection on an idle forward: %v", err)
		}
	})
}

// cp both ways: a 20 MB file arrives in the pod and comes back unchanged.
func TestCopy(t *testing.T) {
	pod := sleeper(t)
	forEachProtocol(t, func(t *testing.T, proto string, penv []string) {
		dir := filepath.Join(env.dir, "cp-"+proto)
		if err := os.MkdirAll(filepath.Join(dir, "pod"), 0o755); err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, 20<<20)
		_, _ = rand.Read(payload)
		src := filepath.Join(dir, "src.bin")
		if err := os.WriteFile(src, payload, 0o644); err != nil {
			t.Fatal(err)
		}
		// The development node runs pods as host processes: the pod's
		// path is a host path, which lets the test look at it directly.
		inPod := filepath.Join(dir, "pod", "file.bin")
		if _, errs, err := kubectlEnv(t, penv, nil, "cp", src, "default/"+pod+":"+inPod); err != nil {
			t.Fatalf("cp to the pod: %v\n%s", err, errs)
		}
		if got, err := os.ReadFile(inPod); err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("the file in the pod differs (%d bytes, %v)", len(got), err)
		}
		back := filepath.Join(dir, "back.bin")
		if _, errs, err := kubectlEnv(t, penv, nil, "cp", "default/"+pod+":"+inPod, back); err != nil {
			t.Fatalf("cp from the pod: %v\n%s", err, errs)
		}
		if got, err := os.ReadFile(back); err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
			t.Fatalf("the file copied back differs (%d bytes, %v)", len(got), err)
		}
	})
}

// exec -it under a terminal: the remote shell gets a terminal the size of ours
// size, follows it when it is resized, and its exit code is kubectl's.
func TestExecTTY(t *testing.T) {
	pod := sleeper(t)
	forEachProtocol(t, func(t *testing.T, _ string, penv []string) {
		cmd := exec.Command(env.kubectl, "--kubeconfig", kubeconfig(t, "admin"), "exec", "-it", pod, "--", "sh")
		cmd.Env = append(os.Environ(), penv...)
		term, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
		if err != nil {
			t.Fatal(err)
		}
		defer term.Close()
		var screen lockedBuffer
		go func() { _, _ = io.Copy(&screen, term) }()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()

		// Ask until the answer shows: the first resize travels with the
		// session's start, and the shell may not be reading yet.
		askSize := func(want string) {
			t.Helper()
			for range 20 {
				if _, err := term.Write([]byte("stty size\n")); err != nil {
					t.Fatal(err)
				}
				time.Sleep(500 * time.Millisecond)
				if strings.Contains(screen.String(), want) {
					return
				}
			}
			t.Fatalf("the remote terminal never reported %q:\n%s", want, screen.String())
		}
		askSize("24 80")
		if err := pty.Setsize(term, &pty.Winsize{Rows: 40, Cols: 100}); err != nil {
			t.Fatal(err)
		}
		askSize("40 100")

		if _, err := term.Write([]byte("exit 7\n")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if got := exitCode(err); got != 7 {
				t.Errorf("kubectl exited %d (%v), want 7:\n%s", got, err, screen.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("kubectl exec -it did not end after exit:\n%s", screen.String())
		}
	})
}

// A watch that has no event yet still gets its head at once, as directly:
// clients such as kubectl delete --wait wait for the head before anything
// else. Without it the head would come with the first event, or with the
// watch's end 30 s later.
func TestQuietWatchGetsItsHeadAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := env.stack.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		env.stack.GatewayURL+"/clusters/dev/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=30&fieldSelector=metadata.name%3Dnobody", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token("admin"))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("no head within 10 s of a 30 s watch: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %s", resp.Status)
	}
}
