package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"

	"github.com/tether-dev/tether/dev/echo"
	"github.com/tether-dev/tether/dev/stack"
)

// streamResults are the interactive-stream figures: port-forward
// throughput and exec round trips, per protocol and target.
type streamResults struct {
	pfBytes int64
	pf      map[string]map[string]float64 // protocol → target → MB/s each way
	rtt     map[string]map[string]*samples
	rttN    int
}

var streamProtocols = []string{"websocket", "spdy"}

// benchStreams measures port-forward throughput (pfBytes each way at
// once, through an echo server in a pod) and exec round trips (one byte to
// cat and back), direct and through Tether, with each protocol.
func benchStreams(ctx context.Context, c config, s *stack.Stack) (*streamResults, error) {
	direct, err := clientcmd.BuildConfigFromFlags("", s.Kube.AdminKubeconfig)
	if err != nil {
		return nil, err
	}
	kc, err := s.Kubeconfig("admin")
	if err != nil {
		return nil, err
	}
	tether, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(direct)
	if err != nil {
		return nil, err
	}
	for name, cmd := range map[string][]string{
		"bench-echo":    {s.Bin("podtool"), "echo", "--port", "8080"},
		"bench-sleeper": {"sleep", "3600"},
	} {
		if err := runPod(ctx, cs, s.NodeName, name, cmd); err != nil {
			return nil, err
		}
	}
	r := &streamResults{pfBytes: c.pfBytes, pf: map[string]map[string]float64{}, rtt: map[string]map[string]*samples{}, rttN: c.rttN}
	targets := []struct {
		name string
		cfg  *rest.Config
	}{{"direct", direct}, {"tether", tether}}
	for _, p := range streamProtocols {
		r.pf[p], r.rtt[p] = map[string]float64{}, map[string]*samples{}
		for _, t := range targets {
			logf("port-forward, %s, %s: %d MB each way", p, t.name, c.pfBytes>>20)
			mbps, err := forwardThroughput(ctx, t.cfg, p, "bench-echo", c.pfBytes)
			if err != nil {
				return nil, fmt.Errorf("port-forward %s %s: %w", p, t.name, err)
			}
			r.pf[p][t.name] = mbps
			logf("exec round trips, %s, %s: %d", p, t.name, c.rttN)
			sm, err := execRoundTrips(ctx, t.cfg, p, "bench-sleeper", c.rttN)
			if err != nil {
				return nil, fmt.Errorf("exec %s %s: %w", p, t.name, err)
			}
			r.rtt[p][t.name] = sm
		}
	}
	return r, nil
}

// runPod starts a pod on the development node and waits until it runs.
func runPod(ctx context.Context, cs kubernetes.Interface, node, name string, command []string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName: node, RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "main", Image: "tether.dev/host-process", Command: command}},
		},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating pod %s: %w", name, err)
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("pod %s did not start", name)
}

func subresourceURL(cfg *rest.Config, pod, sub string) (*url.URL, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return cs.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(pod).SubResource(sub).URL(), nil
}

// forwardThroughput forwards a local port to the pod's echo server and
// sends n bytes through it while reading them back: MB/s each way.
func forwardThroughput(ctx context.Context, cfg *rest.Config, protocol, pod string, n int64) (float64, error) {
	u, err := subresourceURL(cfg, pod, "portforward")
	if err != nil {
		return 0, err
	}
	var dialer httpstream.Dialer
	switch protocol {
	case "spdy":
		rt, upgrader, err := spdy.RoundTripperFor(cfg)
		if err != nil {
			return 0, err
		}
		dialer = spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)
	default:
		if dialer, err = portforward.NewSPDYOverWebsocketDialer(u, cfg); err != nil {
			return 0, err
		}
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	defer close(stop)
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return 0, err
	}
	failed := make(chan error, 1)
	go func() { failed <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-failed:
		return 0, fmt.Errorf("forwarding: %w", err)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) != 1 {
		return 0, fmt.Errorf("local port: %v", err)
	}
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	if err := echo.RoundTrip(conn.(*net.TCPConn), n); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	return float64(n) / (1 << 20) / elapsed.Seconds(), nil
}

// execRoundTrips keeps one exec session of cat open and times n one-byte
// echoes through it.
func execRoundTrips(ctx context.Context, cfg *rest.Config, protocol, pod string, n int) (*samples, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	u := cs.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "main", Command: []string{"cat"}, Stdin: true, Stdout: true}, scheme.ParameterCodec).URL()
	var ex remotecommand.Executor
	if protocol == "spdy" {
		ex, err = remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	} else {
		ex, err = remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, u.String())
	}
	if err != nil {
		return nil, err
	}
	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdinR, Stdout: stdoutW})
		stdoutW.Close()
	}()
	sm := &samples{}
	one := []byte{'x'}
	back := make([]byte, 1)
	for i := range n + n/10 {
		start := time.Now()
		if _, err := stdinW.Write(one); err != nil {
			return nil, fmt.Errorf("writing: %w", err)
		}
		if _, err := io.ReadFull(stdoutR, back); err != nil {
			return nil, fmt.Errorf("reading: %w", err)
		}
		if i >= n/10 { // the first tenth warms up
			sm.add(time.Since(start), nil)
		}
	}
	stdinW.Close()
	if err := <-done; err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	return sm, nil
}

func streamsReport(r *results, sr *streamResults) string {
	var b strings.Builder
	header(&b, "Interactive streams: Tether vs direct access", r)
	fmt.Fprintf(&b, "- Clients: client-go in the bench process (tools/portforward, tools/remotecommand), as kubectl uses them; the pods run on the development node (dev/kubelet) as host processes\n\n")
	fmt.Fprintf(&b, "## Port-forward throughput\n\n%d MiB sent to an echo server in a pod while reading them back on one forwarded connection; checksums compared.\n\n", sr.pfBytes>>20)
	b.WriteString("| protocol | direct MiB/s each way | Tether MiB/s each way | ratio |\n|---|---:|---:|---:|\n")
	for _, p := range streamProtocols {
		d, t := sr.pf[p]["direct"], sr.pf[p]["tether"]
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | ×%.2f |\n", p, d, t, ratio(t, d))
	}
	fmt.Fprintf(&b, "\n## Exec round trip\n\nOne exec session of `cat`; one byte written to stdin, timed until it is read back from stdout; %d round trips after a tenth as many to warm up.\n\n", sr.rttN)
	b.WriteString("| protocol | direct p50 ms | Tether p50 ms | direct p99 ms | Tether p99 ms | p50 ratio | p50 added ms |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range streamProtocols {
		d, t := sr.rtt[p]["direct"], sr.rtt[p]["tether"]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | ×%.2f | %s |\n", p, ms(d.pct(0.5)), ms(t.pct(0.5)), ms(d.pct(0.99)), ms(t.pct(0.99)),
			ratio(float64(t.pct(0.5)), float64(d.pct(0.5))), ms(t.pct(0.5)-d.pct(0.5)))
	}
	b.WriteString("\nThe direct path is client → kube-apiserver → node; through Tether the bytes also cross gateway, router, NATS, subscriber and agent, each a process with its own copies and system calls, on the same two cores as everything else.\n")
	return b.String()
}
