package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
)

// executor is one of client-go's two ways to run a command in a pod.
type executor struct {
	name string
	new  func(cfg *rest.Config, u *url.URL) (remotecommand.Executor, error)
}

var (
	spdyExecutor = executor{"spdy", func(cfg *rest.Config, u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	}}
	websocketExecutor = executor{"websocket", func(cfg *rest.Config, u *url.URL) (remotecommand.Executor, error) {
		return remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, u.String())
	}}
	executors = []executor{spdyExecutor, websocketExecutor}
)

// throughTether is a client-go config that reaches the cluster through the
// gateway as admin.
func throughTether(t *testing.T) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig(t, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// execIn runs command in pod's container with ex and waits for its end.
func execIn(ctx context.Context, t *testing.T, cfg *rest.Config, ex executor, pod string, stdin io.Reader, stdout, stderr io.Writer, command ...string) error {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := cs.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "main", Command: command, Stdin: stdin != nil, Stdout: true, Stderr: true}, scheme.ParameterCodec).
		URL()
	e, err := ex.new(cfg, u)
	if err != nil {
		return err
	}
	return e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

// A client-go program execs through Tether with either executor: input
// echoed, streams apart, the exit code as a typed error.
func TestClientGoExecutors(t *testing.T) {
	pod := sleeper(t)
	cfg := throughTether(t)
	for _, ex := range executors {
		t.Run(ex.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out, errb bytes.Buffer
			if err := execIn(ctx, t, cfg, ex, pod, strings.NewReader("ping\n"), &out, &errb, "sh", "-c", "cat; echo oops >&2"); err != nil {
				t.Fatalf("exec: %v (%s)", err, errb.String())
			}
			if out.String() != "ping\n" || errb.String() != "oops\n" {
				t.Errorf("stdout %q, stderr %q", out.String(), errb.String())
			}
			err := execIn(ctx, t, cfg, ex, pod, nil, io.Discard, io.Discard, "sh", "-c", "exit 3")
			var exit utilexec.ExitError
			if !errors.As(err, &exit) || exit.ExitStatus() != 3 {
				t.Errorf("exit 3 came back as %v", err)
			}
			noUpgradedLeft(t)
		})
	}
}

// stalledWriter never returns from Write until released: a client that
// stopped reading its exec session's output. stalled closes at the first
// Write, once output is flowing.
type stalledWriter struct {
	stalled chan struct{}
	once    sync.Once
	release chan struct{}
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.stalled) })
	<-w.release
	return 0, io.ErrClosedPipe
}

// latencies times n runs of f and returns their median.
func median(t *testing.T, n int, f func() error) time.Duration {
	t.Helper()
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		d[i] = time.Since(start)
	}
	slices.Sort(d)
	return d[n/2]
}

// One exec session whose reader stopped holds up only itself: GETs and
// other execs over the same agent stream keep their latency. Compared as a
// ratio against the same measurements without the stall, in this run.
func TestStalledExecBlocksNoOne(t *testing.T) {
	pod := sleeper(t)
	cfg := throughTether(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	get := func() error {
		resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/default/configmaps?limit=1", token("admin"), nil, nil)
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET: HTTP %d", resp.StatusCode)
		}
		return nil
	}
	execOne := func() error {
		var out bytes.Buffer
		if err := execIn(ctx, t, cfg, websocketExecutor, pod, strings.NewReader("x"), &out, io.Discard, "cat"); err != nil {
			return err
		}
		if out.String() != "x" {
			return fmt.Errorf("echo gave %q", out.String())
		}
		return nil
	}
	// Warm up connections and caches before measuring.
	_ = median(t, 3, get)
	_ = median(t, 2, execOne)
	baseGet, baseExec := median(t, 25, get), median(t, 7, execOne)

	w := &stalledWriter{stalled: make(chan struct{}), release: make(chan struct{})}
	sctx, stop := context.WithCancel(ctx)
	ended := make(chan error, 1)
	go func() {
		ended <- execIn(sctx, t, cfg, spdyExecutor, pod, nil, w, io.Discard, "cat", "/dev/zero")
	}()
	select {
	case <-w.stalled:
	case err := <-ended:
		t.Fatalf("the session to stall ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the session to stall never produced output")
	}
	// Let every window on the way fill, so the stall is complete.
	time.Sleep(2 * time.Second)

	stallGet, stallExec := median(t, 25, get), median(t, 7, execOne)
	t.Logf("median GET %v → %v during the stall; median exec %v → %v", baseGet, stallGet, baseExec, stallExec)
	// Generous, for a shared 2-core machine: head-of-line blocking would
	// make these time out, not double.
	const limit = 3
	if r := float64(stallGet) / float64(baseGet); r > limit {
		t.Errorf("GET latency ×%.1f while one exec session is stalled", r)
	}
	if r := float64(stallExec) / float64(baseExec); r > limit {
		t.Errorf("exec latency ×%.1f while another exec session is stalled", r)
	}
	// The stalled client hangs up: its session ends at every hop.
	stop()
	close(w.release)
	<-ended
	noUpgradedLeft(t)
}

// services are the processes of the request path.
var services = []string{"gateway", "router", "subscriber", "agent"}

// footprint is each request-path service's goroutines and live heap.
type footprint struct{ goroutines, heap map[string]float64 }

func measure(t *testing.T) footprint {
	t.Helper()
	f := footprint{goroutines: map[string]float64{}, heap: map[string]float64{}}
	for _, s := range services {
		f.heap[s] = liveHeap(t, s)
		f.goroutines[s] = gauge(t, s, "go_goroutines")
	}
	return f
}

// expectBack waits up to 20 s for every service to return to within 5
// goroutines and 8 MiB of live heap of f, and fails the test for each that
// does not.
func (f footprint) expectBack(t *testing.T, after string) {
	t.Helper()
	// The tests' own idle connections are not the services' leaks.
	closeIdleGatewayConns()
	for _, s := range services {
		var g, h float64
		deadline := time.Now().Add(20 * time.Second)
		for {
			g, h = gauge(t, s, "go_goroutines"), liveHeap(t, s)
			if (g <= f.goroutines[s]+5 && h <= f.heap[s]+8<<20) || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("%s: goroutines %v → %v, live heap %.1f → %.1f MiB", s, f.goroutines[s], g, f.heap[s]/(1<<20), h/(1<<20))
		if g > f.goroutines[s]+5 {
			t.Errorf("%s kept %v goroutines more than before %s", s, g-f.goroutines[s], after)
		}
		if h > f.heap[s]+8<<20 {
			t.Errorf("%s kept %.1f MiB more heap than before %s", s, (h-f.heap[s])/(1<<20), after)
		}
	}
}

// liveHeap collects garbage in a service, then reads its heap in use.
func liveHeap(t *testing.T, service string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + env.stack.Admin[service] + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return gauge(t, service, "go_memstats_heap_inuse_bytes")
}

// After 200 exec sessions have opened and closed, every service is back to
// the goroutines and heap it had before: long-lived tunnels leak neither.
func TestExecSessionsLeaveNothingBehind(t *testing.T) {
	pod := sleeper(t)
	cfg := throughTether(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	once := func(i int) error {
		var out bytes.Buffer
		in := fmt.Sprintf("session %d\n", i)
		if err := execIn(ctx, t, cfg, executors[i%2], pod, strings.NewReader(in), &out, io.Discard, "cat"); err != nil {
			return fmt.Errorf("session %d (%s): %w", i, executors[i%2].name, err)
		}
		if out.String() != in {
			return fmt.Errorf("session %d echoed %q", i, out.String())
		}
		return nil
	}
	// Warm up: pools and connections that stay for good are baseline.
	for i := range 4 {
		if err := once(i); err != nil {
			t.Fatal(err)
		}
	}
	base := measure(t)

	sessions := make(chan int)
	errs := make(chan error, 200)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range sessions {
				errs <- once(i)
			}
		}()
	}
	for i := range 200 {
		sessions <- i
	}
	close(sessions)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	base.expectBack(t, "200 sessions")
}
