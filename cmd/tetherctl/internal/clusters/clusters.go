// Package clusters is `tetherctl cluster`: creating, listing and deleting
// clusters through a gateway's ClusterService, and the install manifest of
// a cluster's agent.
package clusters

import (
	"bytes"
	"context"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
)

//go:embed agent.yaml.tmpl
var manifestText string

var manifest = template.Must(template.New("agent").Funcs(template.FuncMap{"indent": indent}).Parse(manifestText))

// indent puts n spaces before every line of s, for a block scalar.
func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad)
}

// AgentOptions are what an operator chooses about the agent's install
// manifest, beyond the cluster and its token.
type AgentOptions struct {
	Image string
	// HTTPSProxy is the HTTP proxy (CONNECT) the agent reaches the
	// subscribers through; empty: none. NoProxy adds to the hosts reached
	// directly (the cluster's kube-apiserver always is).
	HTTPSProxy, NoProxy string
	// SubscriberCA is a PEM CA the agent trusts for the subscribers,
	// besides the system's roots; empty: the system's roots only.
	SubscriberCA string
	// FrontProxySecret names a kubernetes.io/tls Secret in tether-system
	// with a client certificate from the cluster's front-proxy CA: the
	// agent then names users in the kube-apiserver's --requestheader-*
	// headers instead of impersonating them (ADR 017); empty: it
	// impersonates.
	FrontProxySecret string
	// The agent container's resources.
	CPURequest, MemoryRequest, MemoryLimit string
}

// DefaultAgentOptions are the options of a manifest nobody tuned.
func DefaultAgentOptions() AgentOptions {
	return AgentOptions{Image: "tether/agent:dev", CPURequest: "50m", MemoryRequest: "64Mi", MemoryLimit: "256Mi"}
}

var secretName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

var quantity = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi)?$`)

// Validate refuses options that would make a manifest the cluster rejects
// or an agent that cannot connect.
func (o AgentOptions) Validate() error {
	if o.Image == "" || strings.ContainsAny(o.Image, " \"\n") {
		return fmt.Errorf("agent image %q is not an image reference", o.Image)
	}
	if o.HTTPSProxy != "" {
		u, err := url.Parse(o.HTTPSProxy)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--https-proxy %q: want http://HOST:PORT or https://HOST:PORT", o.HTTPSProxy)
		}
	}
	if strings.ContainsAny(o.NoProxy, " \"\n") {
		return fmt.Errorf("--no-proxy %q: want comma-separated hosts, domains or CIDRs", o.NoProxy)
	}
	if o.NoProxy != "" && o.HTTPSProxy == "" {
		return errors.New("--no-proxy without --https-proxy")
	}
	if o.SubscriberCA != "" {
		block, _ := pem.Decode([]byte(o.SubscriberCA))
		if block == nil || block.Type != "CERTIFICATE" {
			return errors.New("--subscriber-ca: no PEM CERTIFICATE in the file")
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("--subscriber-ca: %w", err)
		}
	}
	if o.FrontProxySecret != "" && !secretName.MatchString(o.FrontProxySecret) {
		return fmt.Errorf("--front-proxy-secret %q is not a Secret name", o.FrontProxySecret)
	}
	for flag, q := range map[string]string{"--agent-cpu-request": o.CPURequest, "--agent-memory-request": o.MemoryRequest, "--agent-memory-limit": o.MemoryLimit} {
		if !quantity.MatchString(q) {
			return fmt.Errorf("%s %q is not a Kubernetes quantity", flag, q)
		}
	}
	return nil
}

// ManifestValues fill the agent's install manifest.
type ManifestValues struct {
	ClusterID, AgentEndpoint, BootstrapToken string
	Expires                                  string
	// Tenant and IdentityRoot (PEM) decide whom the agent serves: users of
	// the tenant, signed for by a gateway key the root certified.
	Tenant, IdentityRoot string
	AgentOptions
}

// Manifest renders the agent's install manifest.
func Manifest(v ManifestValues) ([]byte, error) {
	var b bytes.Buffer
	if err := manifest.Execute(&b, v); err != nil {
		return nil, fmt.Errorf("rendering the agent manifest: %w", err)
	}
	return b.Bytes(), nil
}

// Client calls ClusterService at a gateway with the caller's bearer token.
type Client struct {
	svc tetherv1connect.ClusterServiceClient
}

// NewClient validates its arguments. token is called before each call, so
// an exec plugin's token is fresh.
func NewClient(server string, httpClient *http.Client, token func(context.Context) (string, error)) (*Client, error) {
	if !strings.HasPrefix(server, "https://") {
		return nil, fmt.Errorf("the gateway URL must be https, got %q", server)
	}
	auth := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			t, err := token(ctx)
			if err != nil {
				return nil, fmt.Errorf("getting a token: %w", err)
			}
			req.Header().Set("Authorization", "Bearer "+t)
			return next(ctx, req)
		}
	})
	return &Client{svc: tetherv1connect.NewClusterServiceClient(httpClient, strings.TrimSuffix(server, "/"), connect.WithInterceptors(auth))}, nil
}

// Create creates a cluster and writes its agent's install manifest to w.
func (c *Client) Create(ctx context.Context, w io.Writer, id, tenant string, opts AgentOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	resp, err := c.svc.CreateCluster(ctx, connect.NewRequest(&tetherv1.CreateClusterRequest{Id: id, Tenant: tenant}))
	if err != nil {
		return fmt.Errorf("creating cluster %s: %w", id, err)
	}
	return writeManifest(w, id, resp.Msg.GetBootstrap(), opts)
}

// Token gives an existing cluster a new bootstrap token and writes the
// manifest with it.
func (c *Client) Token(ctx context.Context, w io.Writer, id string, opts AgentOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	resp, err := c.svc.IssueBootstrapToken(ctx, connect.NewRequest(&tetherv1.IssueBootstrapTokenRequest{Id: id}))
	if err != nil {
		return fmt.Errorf("new bootstrap token for %s: %w", id, err)
	}
	return writeManifest(w, id, resp.Msg.GetBootstrap(), opts)
}

func writeManifest(w io.Writer, id string, bt *tetherv1.BootstrapToken, opts AgentOptions) error {
	m, err := Manifest(ManifestValues{
		ClusterID: id, AgentEndpoint: bt.GetAgentEndpoint(), BootstrapToken: bt.GetToken(), AgentOptions: opts,
		Tenant: bt.GetTenant(), IdentityRoot: bt.GetIdentityRootKey(),
		Expires: time.Unix(bt.GetExpiresUnix(), 0).UTC().Format(time.RFC3339),
	})
	if err != nil {
		return err
	}
	_, err = w.Write(m)
	return err
}

// Ensure creates the cluster, or gives it a new bootstrap token if it
// exists, and writes the token to path (0600): for automation that
// installs an agent, such as the docker compose stack.
func (c *Client) Ensure(ctx context.Context, id, tenant, path string) error {
	var bt *tetherv1.BootstrapToken
	resp, err := c.svc.CreateCluster(ctx, connect.NewRequest(&tetherv1.CreateClusterRequest{Id: id, Tenant: tenant}))
	switch {
	case err == nil:
		bt = resp.Msg.GetBootstrap()
	case connect.CodeOf(err) == connect.CodeAlreadyExists:
		again, err := c.svc.IssueBootstrapToken(ctx, connect.NewRequest(&tetherv1.IssueBootstrapTokenRequest{Id: id}))
		if err != nil {
			return fmt.Errorf("new bootstrap token for %s: %w", id, err)
		}
		bt = again.Msg.GetBootstrap()
	default:
		return fmt.Errorf("creating cluster %s: %w", id, err)
	}
	if err := os.WriteFile(path, []byte(bt.GetToken()), 0o600); err != nil {
		return fmt.Errorf("writing the bootstrap token: %w", err)
	}
	return nil
}

// Delete deletes a cluster: its agent's credential is revoked at once.
func (c *Client) Delete(ctx context.Context, id string) error {
	if _, err := c.svc.DeleteCluster(ctx, connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: id})); err != nil {
		return fmt.Errorf("deleting cluster %s: %w", id, err)
	}
	return nil
}

// List writes the clusters the caller may see as a table, a page at a
// time as the registry gives them.
func (c *Client) List(ctx context.Context, w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTENANT\tAGENT\tSINCE\tSUBSCRIBERS\tCONNECTS\tCREATED\tCREATED BY")
	for token := ""; ; {
		resp, err := c.svc.ListClusters(ctx, connect.NewRequest(&tetherv1.ListClustersRequest{PageToken: token}))
		if err != nil {
			return fmt.Errorf("listing clusters: %w", err)
		}
		writeClusters(tw, resp.Msg.GetClusters())
		if token = resp.Msg.GetNextPageToken(); token == "" {
			return tw.Flush()
		}
		// A long list shows as it comes.
		if err := tw.Flush(); err != nil {
			return err
		}
	}
}

// writeClusters writes one row per cluster.
func writeClusters(tw *tabwriter.Writer, cls []*tetherv1.Cluster) {
	for _, cl := range cls {
		state, since, subs := "never connected", "-", "-"
		if a := cl.GetAgent(); a != nil {
			state = strings.ToLower(strings.TrimPrefix(a.GetState().String(), "AGENT_STATE_"))
			if a.GetSinceUnix() != 0 {
				since = time.Unix(a.GetSinceUnix(), 0).UTC().Format(time.RFC3339)
			}
			var names []string
			for _, s := range a.GetStreams() {
				names = append(names, s.GetSubscriberId())
			}
			if len(names) > 0 {
				subs = strings.Join(names, ",")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", cl.GetId(), cl.GetTenant(), state, since, subs, cl.GetAgent().GetConnects(),
			time.Unix(cl.GetCreatedUnix(), 0).UTC().Format(time.RFC3339), cl.GetCreatedBy())
	}
}

// Patiently calls f until it succeeds, fails in a way waiting cannot cure,
// or wait has passed: for automation that starts together with the stack
// it calls (docker-compose.yml's one-shot that creates the first cluster).
// Only an unreachable or unready gateway, or one whose backends are not
// up yet, is waited for; a refusal (bad token, bad request) returns at once.
func Patiently(ctx context.Context, wait time.Duration, f func(context.Context) error) error {
	deadline := time.Now().Add(wait)
	backoff := 100 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		switch connect.CodeOf(err) {
		case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeUnknown:
		default:
			return err
		}
		if !time.Now().Add(backoff).Before(deadline) {
			return err
		}
		// Jittered, so several automations do not call in step.
		sleep := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(sleep):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
