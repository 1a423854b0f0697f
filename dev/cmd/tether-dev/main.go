// Command tether-dev is `make run`: it builds Tether, starts a real
// kube-apiserver (unless --agent-kubeconfig names a cluster of yours),
// NATS with JetStream, and every service as its own process, then prints
// how to point kubectl at it. Ctrl-C stops everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tether-dev/tether/dev/kube"
	"github.com/tether-dev/tether/dev/stack"
)

func main() {
	var state, agentKubeconfig string
	flag.StringVar(&state, "state", ".state", "folder for certificates, logs, NATS data and kubeconfigs")
	flag.StringVar(&agentKubeconfig, "agent-kubeconfig", os.Getenv("AGENT_KUBECONFIG"), "kubeconfig of a cluster for the agent; empty starts a local kube-apiserver")
	flag.Parse()
	if err := run(state, agentKubeconfig); err != nil {
		fmt.Fprintf(os.Stderr, "tether-dev: %v\n", err)
		os.Exit(1)
	}
}

func run(state, agentKubeconfig string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root, err := stack.RepoRoot(".")
	if err != nil {
		return err
	}
	state, err = filepath.Abs(state)
	if err != nil {
		return err
	}
	bin := filepath.Join(state, "bin")
	if err := stack.Build(ctx, root, bin, os.Stderr); err != nil {
		return err
	}
	opts := stack.Options{Root: root, BinDir: bin, StateDir: state, AgentKubeconfig: agentKubeconfig, Log: os.Stderr}
	if agentKubeconfig == "" {
		fmt.Fprintln(os.Stderr, "tether-dev: no AGENT_KUBECONFIG: starting a local kube-apiserver (the first build takes several minutes)")
		if opts.KubeBinDir, err = kube.EnsureBinaries(ctx, root, os.Stderr); err != nil {
			return err
		}
	}
	s, err := stack.Up(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "\ntether-dev: stopping")
		if err := s.Down(); err != nil {
			fmt.Fprintf(os.Stderr, "tether-dev: %v\n", err)
		}
	}()
	admin, err := s.Kubeconfig("admin")
	if err != nil {
		return err
	}
	alice, err := s.Kubeconfig("alice")
	if err != nil {
		return err
	}
	mallory, err := s.Kubeconfig("mallory")
	if err != nil {
		return err
	}
	node := ""
	if s.NodeName != "" {
		node = fmt.Sprintf(`
Pods with spec.nodeName: %s run on this machine as host processes (the
development node), so exec, attach, logs and port-forward work:
  kubectl run shell --image=none --overrides='{"spec":{"nodeName":"%s"}}' --command -- sleep 3600
  kubectl exec -it shell -- sh
`, s.NodeName, s.NodeName)
	}
	fmt.Printf(`
Tether is up: gateway %s, cluster %q behind an agent that dialed out.

  export KUBECONFIG=%s
  kubectl get ns
`+node+`
Other users: alice (tenant acme; the cluster's RBAC decides, nothing granted yet)
               KUBECONFIG=%s
             mallory (tenant globex: cannot see cluster %q)
               KUBECONFIG=%s
Logs: %s    Metrics: http://%s/metrics (gateway)
Ctrl-C stops everything.
`, s.GatewayURL, stack.ClusterID, admin, alice, stack.ClusterID, mallory, filepath.Join(state, "logs"), s.Admin["gateway"])

	// Report a service that dies instead of leaving a half stack up.
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		for _, name := range []string{"natsd", "subscriber", "router", "gateway", "agent", "devnode"} {
			if p := s.Process(name); p != nil && p.Exited() {
				return fmt.Errorf("%s exited: %v", name, p.ExitError())
			}
		}
	}
}
