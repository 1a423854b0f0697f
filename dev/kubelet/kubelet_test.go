package kubelet_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"

	"github.com/tether-dev/tether/dev/echo"
	"github.com/tether-dev/tether/dev/kube"
	"github.com/tether-dev/tether/dev/kubelet"
	"github.com/tether-dev/tether/dev/pki"
	"github.com/tether-dev/tether/dev/stack"
)

const nodeName = "test-node"

// env is the control plane and node every test shares: starting them takes
// longer than all the tests together.
var env struct {
	cfg     *rest.Config
	client  kubernetes.Interface
	podtool string
	dir     string
	// startNode runs a node on the shared control plane until its context
	// ends, and waits until the Node is Ready.
	startNode func(ctx context.Context) (stopped <-chan error, err error)
	// stopNode stops the running node.
	stopNode func() error
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("skipping: needs a real control plane")
		return
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	root, err := stack.RepoRoot(".")
	if err != nil {
		return fail(err)
	}
	bin, err := kube.EnsureBinaries(ctx, root, os.Stderr)
	if err != nil {
		return fail(err)
	}
	dir, err := os.MkdirTemp("", "tether-kubelet-test-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	env.dir = dir
	env.podtool = filepath.Join(dir, "podtool")
	build := exec.CommandContext(ctx, "go", "build", "-o", env.podtool, "./dev/cmd/podtool")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fail(fmt.Errorf("building podtool: %w", err))
	}
	cp, err := kube.Start(ctx, kube.Config{BinDir: bin, Dir: filepath.Join(dir, "kube")})
	if err != nil {
		return fail(err)
	}
	defer cp.Stop()
	if env.cfg, err = clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig); err != nil {
		return fail(err)
	}
	if env.client, err = kubernetes.NewForConfig(env.cfg); err != nil {
		return fail(err)
	}
	tlsConfig, err := nodeTLS(filepath.Join(dir, "pki"), cp.CAFile)
	if err != nil {
		return fail(err)
	}
	env.startNode = func(ctx context.Context) (<-chan error, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		node, err := kubelet.New(kubelet.Config{
			Client: env.client, Name: nodeName, Listener: ln, TLS: tlsConfig,
			StateDir: filepath.Join(dir, "node"), PodCIDR: podCIDR, StandIn: env.podtool,
			Log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		})
		if err != nil {
			return nil, err
		}
		stopped := make(chan error, 1)
		started := time.Now().Truncate(time.Second)
		go func() { stopped <- node.Run(ctx) }()
		return stopped, poll(ctx, 30*time.Second, func() bool {
			n, err := env.client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
			if err != nil {
				return false
			}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					return c.Status == corev1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(started)
				}
			}
			return false
		})
	}
	if err := restartNode(); err != nil {
		return fail(fmt.Errorf("starting the node: %w", err))
	}
	code := m.Run()
	if err := env.stopNode(); err != nil {
		return fail(fmt.Errorf("node: %w", err))
	}
	return code
}

// restartNode stops the running node, if any, and starts another.
func restartNode() error {
	if env.stopNode != nil {
		if err := env.stopNode(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped, err := env.startNode(ctx)
	env.stopNode = sync.OnceValue(func() error {
		cancel()
		if stopped == nil {
			return nil
		}
		return <-stopped
	})
	return err
}

// nodeTLS serves with a certificate of a CA of its own, as the
// kube-apiserver does not check kubelets' certificates here, and requires
// the client certificate the kube-apiserver presents, signed by its CA.
func nodeTLS(dir, clientCA string) (*tls.Config, error) {
	ca, err := pki.NewCA(dir, "node-ca")
	if err != nil {
		return nil, err
	}
	certPath, keyPath, err := ca.IssueServer(dir, "node", []string{"127.0.0.1"})
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(clientCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		NextProtos: []string{"http/1.1"},
	}, nil
}

func poll(ctx context.Context, limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not true after %v", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// podSpec is a pod of one container "main" on the test node.
func podSpec(name string, restart corev1.RestartPolicy, c corev1.Container) *corev1.Pod {
	c.Name, c.Image = "main", "host-process"
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName: nodeName, RestartPolicy: restart, TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken: new(bool), Containers: []corev1.Container{c},
		},
	}
}

// createPod creates pod, deleted after the test, and waits until ok
// accepts its status.
func createPod(t *testing.T, pod *corev1.Pod, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	ctx := t.Context()
	pods := env.client.CoreV1().Pods(pod.Namespace)
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pods.Delete(context.Background(), pod.Name, metav1.DeleteOptions{})
	})
	return waitPod(t, pod.Name, what, ok)
}

func waitPod(t *testing.T, name, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := poll(t.Context(), 30*time.Second, func() bool {
		p, err := env.client.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		last = p
		return ok(p)
	})
	if err != nil {
		t.Fatalf("pod %s never %s; last status: %+v", name, what, last.Status)
	}
	return last
}

func running(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" }

func gone(t *testing.T, name string) {
	t.Helper()
	err := poll(t.Context(), 30*time.Second, func() bool {
		_, err := env.client.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if err != nil {
		t.Fatalf("pod %s was not removed", name)
	}
}

func sleeper(t *testing.T, name string) *corev1.Pod {
	return createPod(t, podSpec(name, corev1.RestartPolicyAlways, corev1.Container{
		Command: []string{"sleep", "3600"}, WorkingDir: t.TempDir(),
	}), "Running", running)
}

type executor struct {
	name string
	new  func(u *url.URL) (remotecommand.Executor, error)
}

var executors = []executor{
	{"spdy", func(u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewSPDYExecutor(env.cfg, http.MethodPost, u)
	}},
	{"websocket", func(u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewWebSocketExecutor(env.cfg, http.MethodGet, u.String())
	}},
}

func execIn(ctx context.Context, ex executor, pod string, stdin io.Reader, stdout, stderr io.Writer, command ...string) error {
	u := env.client.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "main", Command: command, Stdin: stdin != nil, Stdout: stdout != nil, Stderr: stderr != nil}, scheme.ParameterCodec).
		URL()
	e, err := ex.new(u)
	if err != nil {
		return err
	}
	return e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// podCIDR is this test binary's: another node on the machine (the e2e
// stack's, run at the same time) has its own.
var podCIDR = kubelet.RandomPodCIDR()

func TestPodRuns(t *testing.T) {
	t.Parallel()
	p := sleeper(t, "runs")
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil || !podCIDR.Contains(ip) {
		t.Errorf("pod IP %q is not from the pod CIDR", p.Status.PodIP)
	}
	cs := p.Status.ContainerStatuses
	if len(cs) != 1 || cs[0].State.Running == nil || !cs[0].Ready || p.Status.HostIP != "127.0.0.1" {
		t.Errorf("status %+v", p.Status)
	}
}

func TestExec(t *testing.T) {
	t.Parallel()
	sleeper(t, "exec")
	tests := []struct {
		name       string
		stdin      string
		command    []string
		wantOut    string
		wantErr    string
		wantStatus int // -1: success
	}{
		{"stdin to cat, EOF ends it", "hello\nworld\n", []string{"cat"}, "hello\nworld\n", "", -1},
		{"streams apart, exit code", "", []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, "out\n", "err\n", 3},
		{"env of the pod", "", []string{"sh", "-c", "echo $POD_NAME $POD_NAMESPACE"}, "exec default\n", "", -1},
		{"killed by a signal", "", []string{"sh", "-c", "kill -9 $$"}, "", "", 137},
		{"a background child keeps its output", "", []string{"sh", "-c", "sleep 30 & echo started"}, "started\n", "", -1},
	}
	for _, ex := range executors {
		for _, tt := range tests {
			t.Run(ex.name+"/"+tt.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				defer cancel()
				var stdin io.Reader
				if tt.stdin != "" {
					stdin = strings.NewReader(tt.stdin)
				}
				var out, errb bytes.Buffer
				start := time.Now()
				err := execIn(ctx, ex, "exec", stdin, &out, &errb, tt.command...)
				var exit utilexec.ExitError
				switch {
				case tt.wantStatus < 0 && err != nil:
					t.Errorf("exec: %v", err)
				case tt.wantStatus >= 0 && (!errors.As(err, &exit) || exit.ExitStatus() != tt.wantStatus):
					t.Errorf("exec: %v, want exit status %d", err, tt.wantStatus)
				}
				if out.String() != tt.wantOut || errb.String() != tt.wantErr {
					t.Errorf("stdout %q, stderr %q; want %q, %q", out.String(), errb.String(), tt.wantOut, tt.wantErr)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("took %v", d)
				}
			})
		}
	}
}

// The node ends an exec'd process when the client goes away.
func TestExecClientGone(t *testing.T) {
	t.Parallel()
	sleeper(t, "exec-gone")
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- execIn(ctx, executors[0], "exec-gone", nil, io.Discard, nil, "sh", "-c", "echo $$ > "+pidFile+"; exec sleep 3600")
	}()
	pid := readPID(t, pidFile)
	cancel()
	<-done
	processGone(t, pid)
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	err := poll(t.Context(), 10*time.Second, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	if err != nil {
		t.Fatalf("no pid in %s", path)
	}
	return pid
}

func processGone(t *testing.T, pid int) {
	t.Helper()
	err := poll(t.Context(), 10*time.Second, func() bool {
		// A zombie still answers kill -0; its state in /proc says it died.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || err != nil || strings.Contains(string(b), ") Z ")
	})
	if err != nil {
		t.Errorf("process %d still runs", pid)
	}
}

func logs(ctx context.Context, pod string, opts *corev1.PodLogOptions) (string, error) {
	opts.Container = "main"
	// Stream, unlike DoRaw, decodes the Status of an error.
	rc, err := env.client.CoreV1().Pods("default").GetLogs(pod, opts).Stream(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

func TestLogs(t *testing.T) {
	t.Parallel()
	stop := filepath.Join(t.TempDir(), "stop")
	createPod(t, podSpec("logs", corev1.RestartPolicyNever, corev1.Container{Command: []string{"sh", "-c",
		`i=0; while [ ! -e "$0" ]; do i=$((i+1)); echo "line $i"; sleep 0.05; done; echo last >&2`, stop}}), "Running", running)

	ctx := t.Context()
	rc, err := env.client.CoreV1().Pods("default").GetLogs("logs", &corev1.PodLogOptions{Container: "main", Follow: true}).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), "line 5\n") {
		n, err := rc.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("follow ended before the container did: %v, %q", err, got.String())
		}
	}
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	followed := make(chan error, 1)
	go func() {
		_, err := io.Copy(&got, rc)
		followed <- err
	}()
	select {
	case err := <-followed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end when the container exited")
	}
	lines := strings.Split(strings.TrimSuffix(got.String(), "\n"), "\n")
	if lines[len(lines)-1] != "last" {
		t.Fatalf("followed log ends with %q", lines[len(lines)-1])
	}
	n := len(lines) - 1
	waitPod(t, "logs", "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })

	tail := int64(2)
	tests := []struct {
		name    string
		opts    corev1.PodLogOptions
		want    string
		wantErr string
	}{
		{"all", corev1.PodLogOptions{}, got.String(), ""},
		{"tail", corev1.PodLogOptions{TailLines: &tail}, fmt.Sprintf("line %d\nlast\n", n), ""},
		{"limit", corev1.PodLogOptions{LimitBytes: new(int64)}, "", ""},
		{"previous", corev1.PodLogOptions{Previous: true}, "", `previous terminated container "main" in pod "logs" not found`},
	}
	*tests[2].opts.LimitBytes = 9
	tests[2].want = "line 1\nli"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := logs(ctx, "logs", &tt.opts)
			if tt.wantErr != "" {
				if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want 400 %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || out != tt.want {
				t.Errorf("got %q, %v; want %q", out, err, tt.want)
			}
		})
	}
	with, err := logs(ctx, "logs", &corev1.PodLogOptions{Timestamps: true, TailLines: &tail})
	if f := strings.Fields(with); err != nil || len(f) < 2 || f[1] != "line" {
		t.Errorf("timestamps: %q, %v", with, err)
	} else if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
		t.Errorf("timestamps: %q does not start with a time: %v", with, err)
	}
}

// A container that fails restarts (OnFailure), and its previous
// instance's log stays readable.
func TestRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := createPod(t, podSpec("restarts", corev1.RestartPolicyOnFailure, corev1.Container{
		Command:    []string{"sh", "-c", `n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; echo "run $((n+1))"; [ $n -ge 1 ] && exec sleep 3600; exit 1`},
		WorkingDir: dir,
	}), "restarted", func(p *corev1.Pod) bool {
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].RestartCount >= 1 && cs[0].State.Running != nil
	})
	last := p.Status.ContainerStatuses[0].LastTerminationState.Terminated
	if last == nil || last.ExitCode != 1 {
		t.Errorf("last termination state %+v, want exit code 1", p.Status.ContainerStatuses[0].LastTerminationState)
	}
	prev, err := logs(t.Context(), "restarts", &corev1.PodLogOptions{Previous: true})
	if err != nil || prev != "run 1\n" {
		t.Errorf("previous log %q, %v", prev, err)
	}
	cur, err := logs(t.Context(), "restarts", &corev1.PodLogOptions{})
	if err != nil || cur != "run 2\n" {
		t.Errorf("current log %q, %v", cur, err)
	}
}

func TestPortForward(t *testing.T) {
	t.Parallel()
	createPod(t, podSpec("echo", corev1.RestartPolicyAlways, corev1.Container{
		Command: []string{env.podtool, "echo", "--port", "8080"},
	}), "Running", running)
	// Running comes before the server listens.
	time.Sleep(500 * time.Millisecond)

	transport, upgrader, err := spdy.RoundTripperFor(env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := env.client.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name("echo").SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	forwarded := make(chan error, 1)
	go func() { forwarded <- fw.ForwardPorts() }()
	defer func() {
		close(stop)
		<-forwarded
	}()
	select {
	case <-ready:
	case err := <-forwarded:
		t.Fatal(err)
	}
	ports, err := fw.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{1, 4 << 20} {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))))
		if err != nil {
			t.Fatal(err)
		}
		if err := echo.RoundTrip(c.(*net.TCPConn), size); err != nil {
			t.Errorf("%d bytes: %v", size, err)
		}
		c.Close()
	}
}

// Deleting a pod ends its processes, those exec started in it too, and
// removes it.
func TestDelete(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	createPod(t, podSpec("doomed", corev1.RestartPolicyAlways, corev1.Container{
		// Ignores SIGTERM, so the node has to kill it.
		Command: []string{"sh", "-c", `trap "" TERM; echo $$ > pid; while :; do sleep 0.1; done`}, WorkingDir: dir,
	}), "Running", running)
	pid := readPID(t, filepath.Join(dir, "pid"))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		_ = execIn(ctx, executors[0], "doomed", nil, io.Discard, nil, "sh", "-c", "echo $$ > exec-pid; exec sleep 3600")
	}()
	execPID := readPID(t, filepath.Join(dir, "exec-pid"))

	start := time.Now()
	if err := env.client.CoreV1().Pods("default").Delete(t.Context(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	gone(t, "doomed")
	t.Logf("deleted in %v", time.Since(start))
	processGone(t, pid)
	processGone(t, execPID)
}

// A pod deleted while its node was down is removed once the node is back:
// only the node a pod is bound to finishes its deletion.
func TestDeleteWhileNodeDown(t *testing.T) {
	// Not parallel: Go runs the parallel tests only once this one is done.
	sleeper(t, "deleted-while-down")
	if err := env.stopNode(); err != nil {
		t.Fatal(err)
	}
	if err := env.client.CoreV1().Pods("default").Delete(t.Context(), "deleted-while-down", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := restartNode(); err != nil {
		t.Fatal(err)
	}
	gone(t, "deleted-while-down")
}

// attach reaches the container's own stdin and stdout; with stdinOnce the
// end of the first session's input is the container's.
func TestAttach(t *testing.T) {
	t.Parallel()
	for _, ex := range executors {
		t.Run(ex.name, func(t *testing.T) {
			name := "attach-" + ex.name
			createPod(t, podSpec(name, corev1.RestartPolicyNever, corev1.Container{
				Command: []string{"sh", "-c", `while read l; do echo "got:$l"; done; echo bye`},
				Stdin:   true, StdinOnce: true,
			}), "Running", running)
			u := env.client.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(name).SubResource("attach").
				VersionedParams(&corev1.PodAttachOptions{Container: "main", Stdin: true, Stdout: true, Stderr: true}, scheme.ParameterCodec).
				URL()
			e, err := ex.new(u)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			var out bytes.Buffer
			err = e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("a\nb\n"), Stdout: &out, Stderr: io.Discard})
			if err != nil || out.String() != "got:a\ngot:b\nbye\n" {
				t.Errorf("attach: %q, %v", out.String(), err)
			}
			waitPod(t, name, "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
		})
	}
}
