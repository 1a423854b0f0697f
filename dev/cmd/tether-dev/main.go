// Command tether-dev is `make run`: it builds Tether, starts a real
// kube-apiserver (unless --agent-kubeconfig names a cluster of yours),
// NATS with JetStream, the development identity provider and every service
// as its own process, then prints how to point kubectl at it. A service
// that exits is started again, with backoff, and the restart logged. Ctrl-C
// stops everything and exits 0.
//
// `tether-dev --check` comes up the same way, then checks the stack through
// Tether with the kubectl that matches the server (namespaces listed, a
// pod and a Deployment Running on the development node), stops it and
// exits: 0 if everything worked. CI runs it from an empty state.
//
// `tether-dev secrets --namespace tether --release tether` prints the Secrets
// the Helm chart (deploy/helm/tether) mounts: NATS passwords, the
// agent-credential signing key, internal certificates, and with
// --gateway-host/--agents-host trial public certificates.
//
// `tether-dev pki --out DIR --host-dir DIR` makes what docker-compose.yml's
// stack mounts, and `tether-dev bind-admins` gives its admin group
// cluster-admin (see pki.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/tether-dev/tether/dev/kube"
	"github.com/tether-dev/tether/dev/stack"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "secrets" {
		if err := secrets(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "tether-dev secrets: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "bind-admins" {
		if err := bindAdmins(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "tether-dev bind-admins: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "pki" {
		if err := composePKI(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "tether-dev pki: %v\n", err)
			os.Exit(1)
		}
		return
	}
	var state, agentKubeconfig string
	var replicas, natsNodes int
	var check bool
	flag.StringVar(&state, "state", ".state", "folder for certificates, logs, NATS data and kubeconfigs")
	flag.IntVar(&replicas, "replicas", envInt("REPLICAS", 1), "instances of gateway, router and subscriber")
	flag.IntVar(&natsNodes, "nats-nodes", envInt("CLUSTER", 1), "NATS servers: 3 make a cluster with JetStream streams replicated three times")
	flag.StringVar(&agentKubeconfig, "agent-kubeconfig", os.Getenv("AGENT_KUBECONFIG"), "kubeconfig of a cluster for the agent; empty starts a local kube-apiserver")
	flag.BoolVar(&check, "check", false, "once up, check the stack through Tether with kubectl, then stop; exit 0 if it works")
	flag.Parse()
	// Ctrl-C is for this process alone, not for make above it, which would
	// otherwise die of it and report an error however cleanly we stop.
	defer takeTerminal()()
	if err := run(state, agentKubeconfig, replicas, natsNodes, check); err != nil {
		fmt.Fprintf(os.Stderr, "tether-dev: %v\n", err)
		os.Exit(1)
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func run(state, agentKubeconfig string, replicas, natsNodes int, check bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := up(ctx, state, agentKubeconfig, replicas, natsNodes, check)
	if ctx.Err() != nil && !check {
		// Interrupted: what was cut short is what the user asked for.
		fmt.Fprintln(os.Stderr, "tether-dev: stopped")
		return nil
	}
	return err
}

func up(ctx context.Context, state, agentKubeconfig string, replicas, natsNodes int, check bool) error {
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
	opts := stack.Options{Root: root, BinDir: bin, StateDir: state, AgentKubeconfig: agentKubeconfig, Log: os.Stderr, Replicas: replicas, NATSNodes: natsNodes}
	if agentKubeconfig == "" {
		fmt.Fprintln(os.Stderr, "tether-dev: no AGENT_KUBECONFIG: starting a local control plane (its first build takes 11 to 16 minutes on 2 cores)")
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
	ada, err := s.OIDCKubeconfig("ada", "")
	if err != nil {
		return err
	}
	grace, err := s.OIDCKubeconfig("grace", "")
	if err != nil {
		return err
	}
	kubectl := kubectlFor(opts.KubeBinDir)
	if check {
		return checkStack(ctx, kubectl, admin, s.NodeName != "")
	}
	hostNote, err := byHost(s)
	if err != nil {
		return err
	}
	node := ""
	if s.NodeName != "" {
		node = fmt.Sprintf(`
Pods run on this machine as host processes (the development node %s,
where kube-scheduler puts them), so exec, attach, logs and port-forward work:
  kubectl run shell --image=busybox -- sleep 3600
  kubectl exec -it shell -- sh
A container that names only an image (kubectl create deployment web
--image=nginx) gets a stand-in process that serves its declared ports and
sleeps: the node runs commands, not images (kubectl describe says so).
`, s.NodeName)
	}
	kubectlLine := ""
	if opts.KubeBinDir != "" {
		kubectlLine = fmt.Sprintf("\nkubectl of the server's version (built with the control plane):\n  %s\n", kubectl)
	}
	fmt.Printf(`
Tether is up: gateway %s, cluster %q behind an agent that dialed out.

  export KUBECONFIG=%s
  kubectl get ns
`+kubectlLine+node+hostNote+`
Other users (static tokens):
  alice (tenant acme; the cluster's RBAC decides, nothing granted yet)   KUBECONFIG=%s
  mallory (tenant globex: cannot see cluster %q)                        KUBECONFIG=%s
Single sign-on through the development identity provider %s
(kubectl runs "tetherctl login", which the provider approves by login hint):
  ada (ada@acme.example, tenant acme)                                   KUBECONFIG=%s
  grace (grace@globex.example, tenant globex)                           KUBECONFIG=%s

Clusters (admin may create and delete; everyone lists their tenants'):
  %s cluster list --kubeconfig %s
  %s cluster create prod-1 --tenant acme --kubeconfig %s > agent.yaml
Gateways (any of them reaches any cluster): %s
NATS: %s
Logs: %s    Metrics: http://%s/metrics (gateway)
A service that exits is started again (see its log). Ctrl-C stops everything.
`, s.GatewayURL, stack.ClusterID, admin, alice, stack.ClusterID, mallory, s.IssuerURL, ada, grace,
		s.Bin("tetherctl"), admin, s.Bin("tetherctl"), admin, strings.Join(s.GatewayURLs, " "), s.NATSURL, filepath.Join(state, "logs"), s.Admin["gateway"])

	return keepUp(ctx, s, os.Stderr)
}
