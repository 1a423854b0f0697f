package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/services/gateway/internal/identity"
)

// ClusterAPI serves ClusterService to tetherctl. It authenticates callers
// as for any request, lets platform administrators (members of AdminGroup)
// create and delete clusters and issue bootstrap tokens, shows everyone
// else only their tenants' clusters, and passes each call on to
// agent-registry.
type ClusterAPI struct {
	auth       Authenticator
	registry   tetherv1connect.ClusterServiceClient
	adminGroup string
	log        *slog.Logger
}

// NewClusterAPI validates its arguments.
func NewClusterAPI(auth Authenticator, registry tetherv1connect.ClusterServiceClient, adminGroup string, log *slog.Logger) (*ClusterAPI, error) {
	if auth == nil || registry == nil || adminGroup == "" || log == nil {
		return nil, errors.New("gateway: the cluster API needs an authenticator, the registry, an admin group and a logger")
	}
	return &ClusterAPI{auth: auth, registry: registry, adminGroup: adminGroup, log: log}, nil
}

// Handler is the ClusterService handler to mount beside the gateway.
func (c *ClusterAPI) Handler() (string, http.Handler) {
	// Requests are a name or two, or a list of at most 1,000 (EnsureClusters,
	// about 150 bytes each at most): anything bigger is refused unread.
	return tetherv1connect.NewClusterServiceHandler(c, connect.WithReadMaxBytes(256<<10))
}

// actorHeader tells agent-registry who asked, for the event's record.
const actorHeader = "Tether-Actor"

func (c *ClusterAPI) caller(ctx context.Context, h http.Header) (identity.User, error) {
	scheme, token, ok := strings.Cut(h.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return identity.User{}, connect.NewError(connect.CodeUnauthenticated, errors.New("a bearer token is required"))
	}
	u, err := c.auth.Authenticate(ctx, strings.TrimSpace(token))
	switch {
	case errors.Is(err, identity.ErrUnavailable):
		return identity.User{}, connect.NewError(connect.CodeUnavailable, errors.New("the identity provider cannot be reached; retry"))
	case err != nil:
		c.log.Debug("cluster API: authentication failed", "err", err)
		return identity.User{}, connect.NewError(connect.CodeUnauthenticated, errors.New("unauthorized"))
	}
	return u, nil
}

func (c *ClusterAPI) isAdmin(u identity.User) bool {
	for _, g := range u.Groups {
		if g == c.adminGroup {
			return true
		}
	}
	return false
}

// admin authenticates an administrator and returns the header to pass on.
func (c *ClusterAPI) admin(ctx context.Context, h http.Header, op string) (http.Header, error) {
	u, err := c.caller(ctx, h)
	if err != nil {
		return nil, err
	}
	if !c.isAdmin(u) {
		c.log.Warn("cluster API: refused", "user", u.Name, "op", op)
		return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s needs membership of %q", op, c.adminGroup))
	}
	c.log.Info("cluster API", "user", u.Name, "op", op)
	out := http.Header{}
	out.Set(actorHeader, u.Name)
	return out, nil
}

func forward[T any](h http.Header, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	for k, v := range h {
		req.Header()[k] = v
	}
	return req
}

func (c *ClusterAPI) CreateCluster(ctx context.Context, req *connect.Request[tetherv1.CreateClusterRequest]) (*connect.Response[tetherv1.CreateClusterResponse], error) {
	h, err := c.admin(ctx, req.Header(), "creating cluster "+req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return c.registry.CreateCluster(ctx, forward(h, req.Msg))
}

func (c *ClusterAPI) DeleteCluster(ctx context.Context, req *connect.Request[tetherv1.DeleteClusterRequest]) (*connect.Response[tetherv1.DeleteClusterResponse], error) {
	h, err := c.admin(ctx, req.Header(), "deleting cluster "+req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return c.registry.DeleteCluster(ctx, forward(h, req.Msg))
}

func (c *ClusterAPI) EnsureClusters(ctx context.Context, req *connect.Request[tetherv1.EnsureClustersRequest]) (*connect.Response[tetherv1.EnsureClustersResponse], error) {
	h, err := c.admin(ctx, req.Header(), fmt.Sprintf("ensuring %d clusters", len(req.Msg.GetClusters())))
	if err != nil {
		return nil, err
	}
	return c.registry.EnsureClusters(ctx, forward(h, req.Msg))
}

func (c *ClusterAPI) IssueBootstrapToken(ctx context.Context, req *connect.Request[tetherv1.IssueBootstrapTokenRequest]) (*connect.Response[tetherv1.IssueBootstrapTokenResponse], error) {
	h, err := c.admin(ctx, req.Header(), "issuing a bootstrap token for "+req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return c.registry.IssueBootstrapToken(ctx, forward(h, req.Msg))
}

// ListClusters shows an administrator what they ask for, and anyone else
// the clusters of their own tenants among those asked for.
func (c *ClusterAPI) ListClusters(ctx context.Context, req *connect.Request[tetherv1.ListClustersRequest]) (*connect.Response[tetherv1.ListClustersResponse], error) {
	u, err := c.caller(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	tenants := req.Msg.GetTenants()
	if !c.isAdmin(u) {
		tenants = visible(u.Tenants, tenants)
		if len(tenants) == 0 {
			// An empty filter means every tenant to the registry.
			return connect.NewResponse(&tetherv1.ListClustersResponse{}), nil
		}
	}
	return c.registry.ListClusters(ctx, connect.NewRequest(&tetherv1.ListClustersRequest{
		Tenants: tenants, PageSize: req.Msg.GetPageSize(), PageToken: req.Msg.GetPageToken()}))
}

// visible is own ∩ asked, or own when nothing was asked.
func visible(own, asked []string) []string {
	if len(asked) == 0 {
		return own
	}
	var out []string
	for _, a := range asked {
		for _, o := range own {
			if a == o {
				out = append(out, a)
				break
			}
		}
	}
	return out
}
