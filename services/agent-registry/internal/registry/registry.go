// Package registry is agent-registry's side of clusters: it writes the
// cluster events (ClusterService) and exchanges bootstrap tokens and
// credentials for agents (EnrollmentService). What it reads, it reads from
// the same projection of the stream every other service follows.
package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/tether-dev/tether/lib/agentcred"
	"github.com/tether-dev/tether/lib/clusters"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/telemetry"
)

// Config configures a Registry.
type Config struct {
	JS       jetstream.JetStream
	Clusters *clusters.Projection
	// Sync makes the projection hold everything in the stream, so a
	// decision is made on the latest state (clusters.Follower.Sync).
	Sync   func(context.Context) error
	Signer *agentcred.Signer
	// Verifier checks credentials to renew: the signer's key and, during
	// a key rotation, the previous one.
	Verifier *agentcred.Verifier
	// BootstrapTTL is how long a bootstrap token may wait for its agent;
	// CredentialTTL how long a credential lives (agents renew at two
	// thirds of it); RenewGrace how long after expiry a credential may
	// still be renewed (an agent whose cluster was offline), though never
	// used to connect.
	BootstrapTTL, CredentialTTL, RenewGrace time.Duration
	// AgentEndpoint is where agents connect, written into their manifests.
	AgentEndpoint string
	// IdentityRoot is the identity root's public key (PEM), written into
	// agents' manifests: what they trust gateways' signatures by.
	IdentityRoot string
	// Agents is the projection of agent events.
	Agents AgentLookup
	Now    func() time.Time

	telemetry.Instruments
}

// AgentLookup is what ListClusters needs of the agent projection.
type AgentLookup interface {
	// Status is a cluster's agent described at now, or nil if none ever
	// reported.
	Status(cluster string, now time.Time) *tetherv1.AgentStatus
}

// Registry serves ClusterService and EnrollmentService.
type Registry struct {
	cfg     Config
	results *prometheus.CounterVec
}

// New validates cfg.
func New(cfg Config) (*Registry, error) {
	switch {
	case cfg.JS == nil || cfg.Clusters == nil || cfg.Sync == nil || cfg.Signer == nil || cfg.Verifier == nil:
		return nil, errors.New("registry: JetStream, the projection, its sync, a signer and a verifier are required")
	case cfg.BootstrapTTL <= 0 || cfg.CredentialTTL <= 0:
		return nil, errors.New("registry: bootstrap and credential lifetimes must be positive")
	case cfg.AgentEndpoint == "" || cfg.IdentityRoot == "":
		return nil, errors.New("registry: the agent endpoint and the identity root's public key are required")
	case cfg.Agents == nil:
		return nil, errors.New("registry: the agent projection is required")
	}
	if err := cfg.Instruments.Validate(); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Registry{cfg: cfg, results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tether_registry_operations_total", Help: "Cluster and enrollment operations, by operation and result.",
	}, []string{"op", "result"})}
	if err := cfg.Registerer.Register(r.results); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return r, nil
}

// count records the result of op and passes err through.
func (r *Registry) count(op string, err error) error {
	result := "ok"
	if err != nil {
		result = connect.CodeOf(err).String()
	}
	r.results.WithLabelValues(op, result).Inc()
	return err
}

// EnsureStream creates the CLUSTERS stream, or updates its configuration.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if _, err := js.CreateOrUpdateStream(ctx, clusters.StreamConfig(replicas)); err != nil {
		return fmt.Errorf("creating stream %s: %w", clusters.Stream, err)
	}
	return nil
}

// append writes ev for its cluster, expecting the cluster's latest event to
// be at seq (0: none yet): a registry whose view is stale, or that races
// another, gets Aborted instead of writing on a state it did not see.
func (r *Registry) append(ctx context.Context, ev *tetherv1.ClusterEvent, seq uint64) (uint64, error) {
	subj, err := clusters.Subject(ev.GetClusterId())
	if err != nil {
		return 0, connect.NewError(connect.CodeInvalidArgument, err)
	}
	ev.TimeUnixNano = r.cfg.Now().UnixNano()
	b, err := proto.Marshal(ev)
	if err != nil {
		return 0, connect.NewError(connect.CodeInternal, err)
	}
	ack, err := r.cfg.JS.Publish(ctx, subj, b, jetstream.WithExpectLastSequencePerSubject(seq))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, connect.NewError(connect.CodeAborted, errors.New("the cluster changed meanwhile; try again"))
		}
		return 0, connect.NewError(connect.CodeUnavailable, fmt.Errorf("writing the event: %w", err))
	}
	// Read what was written before answering: the caller's next request
	// may come to this registry again.
	if err := r.cfg.Clusters.WaitApplied(ctx, ack.Sequence); err != nil {
		return 0, connect.NewError(connect.CodeUnavailable, err)
	}
	return ack.Sequence, nil
}

func (r *Registry) sync(ctx context.Context) error {
	if err := r.cfg.Sync(ctx); err != nil {
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("reading cluster events: %w", err))
	}
	return nil
}

func (r *Registry) CreateCluster(ctx context.Context, req *connect.Request[tetherv1.CreateClusterRequest]) (*connect.Response[tetherv1.CreateClusterResponse], error) {
	resp, err := r.createCluster(ctx, req.Msg, actor(req.Header().Get(ActorHeader)))
	return resp, r.count("create", err)
}

// ActorHeader names who asks, for the events' record; the gateway sets it
// from the authenticated user.
const ActorHeader = "Tether-Actor"

func actor(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func (r *Registry) createCluster(ctx context.Context, m *tetherv1.CreateClusterRequest, by string) (*connect.Response[tetherv1.CreateClusterResponse], error) {
	if !subject.ValidClusterID(m.GetId()) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cluster id %q must be a DNS label: lower-case letters, digits and '-', at most 63", m.GetId()))
	}
	if !subject.ValidClusterID(m.GetTenant()) {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("tenant %q must be a DNS label", m.GetTenant()))
	}
	if err := r.sync(ctx); err != nil {
		return nil, err
	}
	if _, exists := r.cfg.Clusters.Get(m.GetId()); exists {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("cluster %q exists", m.GetId()))
	}
	ev := &tetherv1.ClusterEvent{ClusterId: m.GetId(), Actor: by, Kind: &tetherv1.ClusterEvent_Created{
		Created: &tetherv1.ClusterCreated{Tenant: m.GetTenant(), Uid: randomToken(16)}}}
	seq, err := r.append(ctx, ev, r.cfg.Clusters.LastSeq(m.GetId()))
	if err != nil {
		return nil, err
	}
	bt, err := r.issueBootstrap(ctx, m.GetId(), m.GetTenant(), seq, by)
	if err != nil {
		return nil, err
	}
	cl, _ := r.cfg.Clusters.Get(m.GetId())
	return connect.NewResponse(&tetherv1.CreateClusterResponse{Cluster: toProto(cl), Bootstrap: bt}), nil
}

func (r *Registry) issueBootstrap(ctx context.Context, id, tenant string, seq uint64, by string) (*tetherv1.BootstrapToken, error) {
	token := "tbt1." + randomToken(32)
	sum := sha256.Sum256([]byte(token))
	expires := r.cfg.Now().Add(r.cfg.BootstrapTTL)
	ev := &tetherv1.ClusterEvent{ClusterId: id, Actor: by, Kind: &tetherv1.ClusterEvent_BootstrapTokenIssued{
		BootstrapTokenIssued: &tetherv1.BootstrapTokenIssued{TokenSha256: sum[:], ExpiresUnix: expires.Unix()}}}
	if _, err := r.append(ctx, ev, seq); err != nil {
		return nil, err
	}
	return &tetherv1.BootstrapToken{Token: token, ExpiresUnix: expires.Unix(), AgentEndpoint: r.cfg.AgentEndpoint, IdentityRootKey: r.cfg.IdentityRoot, Tenant: tenant}, nil
}

func (r *Registry) IssueBootstrapToken(ctx context.Context, req *connect.Request[tetherv1.IssueBootstrapTokenRequest]) (*connect.Response[tetherv1.IssueBootstrapTokenResponse], error) {
	resp, err := func() (*connect.Response[tetherv1.IssueBootstrapTokenResponse], error) {
		if err := r.sync(ctx); err != nil {
			return nil, err
		}
		cl, ok := r.cfg.Clusters.Get(req.Msg.GetId())
		if !ok {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no cluster %q", req.Msg.GetId()))
		}
		bt, err := r.issueBootstrap(ctx, cl.ID, cl.Tenant, cl.Seq, actor(req.Header().Get(ActorHeader)))
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&tetherv1.IssueBootstrapTokenResponse{Bootstrap: bt}), nil
	}()
	return resp, r.count("issue_bootstrap", err)
}

func (r *Registry) DeleteCluster(ctx context.Context, req *connect.Request[tetherv1.DeleteClusterRequest]) (*connect.Response[tetherv1.DeleteClusterResponse], error) {
	err := func() error {
		if err := r.sync(ctx); err != nil {
			return err
		}
		cl, ok := r.cfg.Clusters.Get(req.Msg.GetId())
		if !ok {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("no cluster %q", req.Msg.GetId()))
		}
		ev := &tetherv1.ClusterEvent{ClusterId: cl.ID, Actor: actor(req.Header().Get(ActorHeader)), Kind: &tetherv1.ClusterEvent_Deleted{Deleted: &tetherv1.ClusterDeleted{}}}
		_, err := r.append(ctx, ev, cl.Seq)
		return err
	}()
	if err != nil {
		return nil, r.count("delete", err)
	}
	return connect.NewResponse(&tetherv1.DeleteClusterResponse{}), r.count("delete", nil)
}

func (r *Registry) ListClusters(ctx context.Context, req *connect.Request[tetherv1.ListClustersRequest]) (*connect.Response[tetherv1.ListClustersResponse], error) {
	// A list is served even while the stream cannot say where it ends (a
	// NATS cluster electing its leader after losing a node): from the
	// projection as it stands, which follows the stream all along and may
	// trail a write made elsewhere by a moment. Writes always sync.
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := r.sync(sctx)
	cancel()
	if err != nil && ctx.Err() != nil {
		return nil, r.count("list", err)
	}
	after, err := pageAfter(req.Msg.GetPageToken())
	if err != nil {
		return nil, r.count("list", err)
	}
	size := int(req.Msg.GetPageSize())
	switch {
	case size <= 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	page, more := r.cfg.Clusters.Page(req.Msg.GetTenants(), after, size)
	out := &tetherv1.ListClustersResponse{Clusters: make([]*tetherv1.Cluster, 0, len(page))}
	now := r.cfg.Now()
	for _, cl := range page {
		c := toProto(cl)
		c.Agent = r.cfg.Agents.Status(cl.ID, now)
		out.Clusters = append(out.Clusters, c)
	}
	if more && len(page) > 0 {
		out.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(page[len(page)-1].ID))
	}
	return connect.NewResponse(out), r.count("list", nil)
}

// ListClusters answers in pages of defaultPageSize clusters unless asked
// for other, and never more than maxPageSize.
const (
	defaultPageSize = 500
	maxPageSize     = 1000
)

// pageAfter is the cluster id a page token says the next page follows.
// The token is the id encoded, opaque to callers so it may change.
func pageAfter(token string) (string, error) {
	if token == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !subject.ValidClusterID(string(b)) {
		return "", connect.NewError(connect.CodeInvalidArgument, errors.New("page_token is not one this service gave"))
	}
	return string(b), nil
}

func toProto(cl clusters.Cluster) *tetherv1.Cluster {
	c := &tetherv1.Cluster{Id: cl.ID, Tenant: cl.Tenant, Uid: cl.UID, CreatedUnix: cl.Created.Unix(), CreatedBy: cl.CreatedBy, Enrollments: cl.Enrollments}
	if !cl.LastEnrolled.IsZero() {
		c.LastEnrolledUnix = cl.LastEnrolled.Unix()
	}
	return c
}

// errRefused is all an enrolling agent learns: which of token, cluster,
// expiry or use was wrong stays in the registry's log.
var errRefused = connect.NewError(connect.CodeUnauthenticated, errors.New("bootstrap token refused"))

func (r *Registry) Enroll(ctx context.Context, req *connect.Request[tetherv1.EnrollRequest]) (*connect.Response[tetherv1.EnrollResponse], error) {
	resp, err := r.enroll(ctx, req.Msg)
	return resp, r.count("enroll", err)
}

func (r *Registry) enroll(ctx context.Context, m *tetherv1.EnrollRequest) (*connect.Response[tetherv1.EnrollResponse], error) {
	if err := r.sync(ctx); err != nil {
		return nil, err
	}
	cl, ok := r.cfg.Clusters.Get(m.GetClusterId())
	if ok && cl.Enrolled.Matches(m.GetBootstrapToken(), m.GetEnrollmentId(), r.cfg.Now()) {
		// The same agent again: its first answer was lost.
		r.cfg.Logger.Info("agent enrolled again with its spent token and its enrollment id", "cluster_id", cl.ID, "credential_id", cl.Enrolled.CredentialID)
		cred, err := r.sign(cl, cl.Enrolled.CredentialID)
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&tetherv1.EnrollResponse{Credential: cred}), nil
	}
	if !ok || !cl.Bootstrap.Matches(m.GetBootstrapToken(), r.cfg.Now()) {
		r.cfg.Logger.Warn("enrollment refused", "cluster_id", m.GetClusterId(), "cluster_exists", ok)
		return nil, errRefused
	}
	credID := agentcred.NewID()
	enrolled := &tetherv1.AgentEnrolled{TokenSha256: cl.Bootstrap.SHA256[:], CredentialId: credID}
	if id := m.GetEnrollmentId(); id != "" {
		sum := sha256.Sum256([]byte(id))
		enrolled.EnrollmentIdSha256 = sum[:]
	}
	ev := &tetherv1.ClusterEvent{ClusterId: cl.ID, Actor: "agent", Kind: &tetherv1.ClusterEvent_AgentEnrolled{AgentEnrolled: enrolled}}
	// Expecting the state just read makes the token single-use even when
	// two agents present it to two registries at once: one write wins.
	if _, err := r.append(ctx, ev, cl.Seq); err != nil {
		if connect.CodeOf(err) == connect.CodeAborted {
			return nil, errRefused
		}
		return nil, err
	}
	cred, err := r.sign(cl, credID)
	if err != nil {
		return nil, err
	}
	r.cfg.Logger.Info("agent enrolled", "cluster_id", cl.ID, "credential_id", credID)
	return connect.NewResponse(&tetherv1.EnrollResponse{Credential: cred}), nil
}

func (r *Registry) sign(cl clusters.Cluster, id string) (*tetherv1.AgentCredential, error) {
	now := r.cfg.Now()
	c := agentcred.Claims{ClusterID: cl.ID, ClusterUID: cl.UID, ID: id, IssuedAt: now, Expires: now.Add(r.cfg.CredentialTTL)}
	tok, err := r.cfg.Signer.Sign(c)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return &tetherv1.AgentCredential{Token: tok, ExpiresUnix: c.Expires.Truncate(time.Second).Unix()}, nil
}

func (r *Registry) Renew(ctx context.Context, req *connect.Request[tetherv1.RenewRequest]) (*connect.Response[tetherv1.RenewResponse], error) {
	resp, err := func() (*connect.Response[tetherv1.RenewResponse], error) {
		claims, err := r.cfg.Verifier.VerifyExpiredWithin(req.Msg.GetCredential(), r.cfg.Now(), r.cfg.RenewGrace)
		if err != nil {
			return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("credential refused"))
		}
		if err := r.sync(ctx); err != nil {
			return nil, err
		}
		// A deleted cluster, or one deleted and created again, renews
		// nothing of the old one.
		cl, ok := r.cfg.Clusters.Get(claims.ClusterID)
		if !ok || cl.UID != claims.ClusterUID {
			return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("credential revoked"))
		}
		cred, err := r.sign(cl, agentcred.NewID())
		if err != nil {
			return nil, err
		}
		return connect.NewResponse(&tetherv1.RenewResponse{Credential: cred}), nil
	}()
	return resp, r.count("renew", err)
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
