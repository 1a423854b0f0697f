// Package e2e drives the real kubectl through the whole of Tether (gateway,
// router, NATS, subscriber, agent) against a real kube-apiserver.
package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tether-dev/tether/dev/stack"
)

// env is the stack every test in this package shares: starting a control
// plane and five processes per test would cost more than the tests.
var env struct {
	stack     *stack.Stack
	kubectl   string
	direct    string // admin kubeconfig straight to the kube-apiserver
	root      string // the repository
	collector *collector
	bin       string // the built binaries
	dir       string // scratch space
}

const noAgentCluster = "no-agent"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		// make test-short: everything here needs the control plane.
		fmt.Println("skipping: every end-to-end test needs a real control plane")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	ws, err := stack.NewWorkspace(ctx, "tether-e2e-", os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ws.Close()
	env.kubectl = ws.Kubectl()
	if env.collector, err = startCollector(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	root, bin, dir, kubeBin := ws.Root, ws.BinDir, ws.Dir, ws.KubeBin
	env.bin, env.dir, env.root = bin, dir, root
	env.stack, err = stack.Up(ctx, stack.Options{
		Root: root, BinDir: bin, StateDir: filepath.Join(dir, "state"), KubeBinDir: kubeBin,
		NoAgentClusters: []string{noAgentCluster}, Log: os.Stderr,
		// Two of each gateway, router and subscriber: every test runs
		// against a fleet, the agent on subscriber-0.
		Replicas: 2,
		// And a gateway with its router in its own process.
		EmbeddedRouter: true,
		// Long enough that an agent which waits it out instead of leaving
		// as soon as it is idle fails TestAgentDrainsAndReconnects.
		// --pprof: the leak test collects garbage in each service before
		// reading its heap.
		Args: map[string][]string{
			// Keepalives of 1 s, so an idle port-forward outlasts several.
			"agent":   {"--shutdown-timeout=3m", "--otlp-endpoint", env.collector.endpoint(), "--ping-interval=1s", "--ping-timeout=5s", "--pprof"},
			"gateway": {"--otlp-endpoint", env.collector.endpoint(), "--pprof", "--max-header-bytes=65536", "--max-long-running-per-user=16", "--max-inflight-per-user=100", "--read-header-timeout=2s"},
			// Short idle probes so the tests of dead peers finish quickly.
			"router":     {"--otlp-endpoint", env.collector.endpoint(), "--idle-probe=2s", "--pprof"},
			"subscriber": {"--otlp-endpoint", env.collector.endpoint(), "--idle-probe=2s", "--ping-interval=1s", "--ping-timeout=5s", "--pprof", "--heartbeat-interval=1s"},
			// Short lifetimes, so expiry and renewal happen during the run.
			"agent-registry": {"--otlp-endpoint", env.collector.endpoint(), "--bootstrap-ttl=" + e2eBootstrapTTL.String(), "--credential-ttl=" + e2eCredentialTTL.String(),
				"--heartbeat-timeout=" + e2eHeartbeatTimeout.String()},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.stack.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the stack:", err)
		}
	}()
	env.direct = env.stack.Kube.AdminKubeconfig
	if agentsClient.Transport, err = env.stack.AgentTransport(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if v := natsViolations(); v != "" {
		fmt.Fprintf(os.Stderr, "NATS refused what the services sent during the run:\n%s\n", v)
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "service logs are in %s (kept: set TETHER_E2E_KEEP=1)\n", filepath.Join(dir, "state", "logs"))
		if os.Getenv("TETHER_E2E_KEEP") != "" {
			select {}
		}
	}
	return code
}

// kubectl runs kubectl with kubeconfig and returns stdout, stderr and the error.
func kubectl(t *testing.T, kubeconfig string, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// must runs kubectl and fails the test on error.
func must(t *testing.T, kubeconfig, stdin string, args ...string) string {
	t.Helper()
	out, errs, err := kubectl(t, kubeconfig, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, errs)
	}
	return out
}

func kubeconfig(t *testing.T, user string) string {
	t.Helper()
	p, err := env.stack.Kubeconfig(user)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
