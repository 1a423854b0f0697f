package stack

import (
	"context"
	"fmt"
	"net/http"

	"connectrpc.com/connect"

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
