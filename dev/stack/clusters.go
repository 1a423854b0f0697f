package stack

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/dev/proc"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
)

// Clusters is agent-registry's ClusterService, called directly (with the
// operator's certificate) as the platform operator would through the
// gateway.
func (s *Stack) Clusters() tetherv1connect.ClusterServiceClient {
	t, err := s.InternalTransport()
	if err != nil {
		// The certificate was issued at Up; only a deleted state folder
		// gets here, and every call then fails with this error.
		t = failingTransport{err}
	}
	return tetherv1connect.NewClusterServiceClient(&http.Client{Transport: t}, s.RegistryURL)
}

type failingTransport struct{ err error }

func (f failingTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }

// EnsureCluster creates cluster id for tenant, or, if it exists from an
// earlier run of the stack, gives it a new bootstrap token; it returns the
// bootstrap token.
func (s *Stack) EnsureCluster(ctx context.Context, id, tenant string) (string, error) {
	c := s.Clusters()
	req := connect.NewRequest(&tetherv1.CreateClusterRequest{Id: id, Tenant: tenant})
	req.Header().Set("Tether-Actor", "tether-dev") // who the events record
	created, err := c.CreateCluster(ctx, req)
	if err == nil {
		return created.Msg.GetBootstrap().GetToken(), nil
	}
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		return "", fmt.Errorf("stack: creating cluster %s: %w", id, err)
	}
	issued, err := c.IssueBootstrapToken(ctx, connect.NewRequest(&tetherv1.IssueBootstrapTokenRequest{Id: id}))
	if err != nil {
		return "", fmt.Errorf("stack: new bootstrap token for %s: %w", id, err)
	}
	return issued.Msg.GetBootstrap().GetToken(), nil
}

// AgentName is the process serving cluster id: "agent" for dev.
func AgentName(id string) string {
	if id == ClusterID {
		return "agent"
	}
	return "agent-" + id
}

// startAgent starts the agent of cluster id, the i-th, with its bootstrap
// token. Its list of subscribers starts at the i-th, so the agents' streams
// spread over all of them: told to move (a subscriber's planned restart),
// a stream connects to the next.
func (s *Stack) startAgent(ctx context.Context, i int, id, bootstrap string) error {
	btFile := filepath.Join(s.opts.StateDir, "bootstrap-token-"+id)
	if err := os.WriteFile(btFile, []byte(bootstrap), 0o600); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	urls := append(append([]string{}, s.SubscriberURLs[i%len(s.SubscriberURLs):]...), s.SubscriberURLs[:i%len(s.SubscriberURLs)]...)
	ports, err := proc.FreePorts(1)
	if err != nil {
		return err
	}
	return s.startService(ctx, AgentName(id), addr(ports[0]), append(s.AgentIdentityArgs("acme"), "--cluster-id", id, "--subscriber-url", strings.Join(urls, ","),
		"--subscriber-ca", s.CAFile, "--kubeconfig", s.AgentKubeconfig, "--bootstrap-token-file", btFile, "--credential-file", filepath.Join(s.opts.StateDir, "agent-credential-"+id))...)
}

// AgentIdentityArgs are the flags by which an agent of tenant's cluster
// trusts the gateways' signatures on who asks (ADR 011).
func (s *Stack) AgentIdentityArgs(tenant string) []string {
	return []string{"--identity-root-key", s.Identity.RootPublic, "--tenant", tenant}
}
