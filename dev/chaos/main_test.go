// Package chaos runs Tether as a fleet (three NATS nodes, two gateways and
// routers, three subscribers, twenty agents) in front of a real
// kube-apiserver, kills and cuts off its parts one at a time under a steady
// mixed load, and checks against the kube-apiserver itself that nothing was
// lost, nothing ran twice, and every failure was a Kubernetes Status.
//
// It needs root, iproute2 and iptables: one subscriber runs on a test host
// of its own (a network namespace). TETHER_CHAOS_FAULTS=prefix,prefix runs
// only the faults whose names begin so; TETHER_CHAOS_KEEP=1 keeps the fleet
// and its logs after a failure; TETHER_CHAOS_REPORT=FILE writes what it
// counted there as Markdown (make chaos: bench/results/chaos.md).
package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-dev/tether/dev/stack"
)

// fleet is the stack every test here shares.
var fleet struct {
	stack *stack.Stack
	// clusters are the 20 clusters, each with its agent; dev is one.
	clusters []string
	dir      string
	kubectl  string
	root     string // the repository, for the report's commit
}

// partitioned is the subscriber on the test host, which the test cuts off
// from NATS.
const partitioned = "subscriber-2"

// Short liveness settings, so each fault is found and healed in seconds;
// the heartbeat period is what the registry's view is held to.
const (
	heartbeat        = 2 * time.Second
	heartbeatTimeout = 6 * time.Second
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ws, err := stack.NewWorkspace(ctx, "tether-chaos-", os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ws.Close()
	fleet.dir, fleet.kubectl, fleet.root = ws.Dir, ws.Kubectl(), ws.Root
	root, bin, dir, kubeBin := ws.Root, ws.BinDir, ws.Dir, ws.KubeBin
	fleet.clusters = []string{stack.ClusterID}
	var more []string
	for i := 1; i < 20; i++ {
		id := fmt.Sprintf("c%02d", i)
		more = append(more, id)
		fleet.clusters = append(fleet.clusters, id)
	}
	fleet.stack, err = stack.Up(ctx, stack.Options{
		Root: root, BinDir: bin, StateDir: filepath.Join(dir, "state"), KubeBinDir: kubeBin, Log: os.Stderr,
		NATSNodes: 3, Replicas: 2, Subscribers: 3, AgentClusters: more, TestHost: []string{partitioned},
		Args: map[string][]string{
			"natsd":          {"--ping-interval=1s"},
			"router":         {"--peer-probe=1s", "--ack-timeout=3s", "--idle-probe=5s", "--pprof"},
			"subscriber":     {"--ping-interval=1s", "--ping-timeout=5s", "--idle-probe=5s", "--heartbeat-interval=" + heartbeat.String(), "--nats-grace=2s", "--pprof"},
			"agent":          {"--ping-interval=1s", "--ping-timeout=5s", "--pprof"},
			"gateway":        {"--pprof"},
			"agent-registry": {"--heartbeat-timeout=" + heartbeatTimeout.String()},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := fleet.stack.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the stack:", err)
		}
	}()
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "service logs are in %s (kept: set TETHER_CHAOS_KEEP=1)\n", filepath.Join(dir, "state", "logs"))
		if os.Getenv("TETHER_CHAOS_KEEP") != "" {
			select {}
		}
	}
	return code
}
