package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tether-dev/tether/lib/agentcred"
	"github.com/tether-dev/tether/lib/clusters"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/telemetry"
)

// startNATS runs an embedded JetStream server for one test.
func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

type fixture struct {
	js     jetstream.JetStream
	signer *agentcred.Signer
	now    *time.Time
	mu     *sync.Mutex
}

func (f fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.now
}

// newRegistry starts a registry, with its own projection and follower, on
// the shared stream: several of them act as replicas.
func (f fixture) newRegistry(t *testing.T, ctx context.Context) (*Registry, *clusters.Projection) {
	t.Helper()
	proj := clusters.NewProjection()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	fol, err := clusters.NewFollower(f.js, proj, log)
	if err != nil {
		t.Fatal(err)
	}
	go fol.Run(ctx)
	ver, _ := agentcred.NewVerifier(f.signer.Public())
	agents, err := StartAgentView(ctx, AgentViewConfig{JS: f.js, Replicas: 1, Timeout: 30 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{
		Agents: agents,
		JS:     f.js, Clusters: proj, Sync: fol.Sync, Signer: f.signer, Verifier: ver,
		BootstrapTTL: 10 * time.Minute, CredentialTTL: time.Hour, RenewGrace: 24 * time.Hour, AgentEndpoint: "https://agents.example", IdentityRoot: "-----BEGIN PUBLIC KEY-----\n",
		Now:         f.clock,
		Instruments: telemetry.Instruments{Logger: log, Registerer: prometheus.NewRegistry(), Tracer: noop.NewTracerProvider().Tracer("t"), Propagator: propagation.TraceContext{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, proj
}

func newFixture(t *testing.T, ctx context.Context) fixture {
	js, err := jetstream.New(startNATS(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := EnsureStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := agentcred.NewSigner(key)
	now := time.Now()
	return fixture{js: js, signer: s, now: &now, mu: &sync.Mutex{}}
}

func code(err error) connect.Code { return connect.CodeOf(err) }

func TestClusterLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFixture(t, ctx)
	r, proj := f.newRegistry(t, ctx)
	create := func(id, tenant string) (*tetherv1.CreateClusterResponse, error) {
		req := connect.NewRequest(&tetherv1.CreateClusterRequest{Id: id, Tenant: tenant})
		req.Header().Set(ActorHeader, "ops")
		resp, err := r.CreateCluster(ctx, req)
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	enroll := func(id, token string) (*tetherv1.AgentCredential, error) {
		resp, err := r.Enroll(ctx, connect.NewRequest(&tetherv1.EnrollRequest{ClusterId: id, BootstrapToken: token}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetCredential(), nil
	}
	renew := func(cred string) (*tetherv1.AgentCredential, error) {
		resp, err := r.Renew(ctx, connect.NewRequest(&tetherv1.RenewRequest{Credential: cred}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetCredential(), nil
	}

	x, err := create("x", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if x.GetCluster().GetCreatedBy() != "ops" || x.GetBootstrap().GetAgentEndpoint() != "https://agents.example" {
		t.Fatalf("created %v", x)
	}
	for _, bad := range []struct{ id, tenant string }{{"x", "acme"}, {"a.b", "acme"}, {"*", "acme"}, {"y", ">"}, {"", "acme"}} {
		if _, err := create(bad.id, bad.tenant); err == nil {
			t.Fatalf("created %q in %q", bad.id, bad.tenant)
		}
	}
	if _, err := enroll("x", "tbt1.guess"); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("a wrong token: %v", err)
	}
	if _, err := enroll("other", x.GetBootstrap().GetToken()); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("x's token for another cluster: %v", err)
	}
	cred, err := enroll("x", x.GetBootstrap().GetToken())
	if err != nil {
		t.Fatal(err)
	}
	ver, _ := agentcred.NewVerifier(f.signer.Public())
	claims, err := ver.Verify(cred.GetToken(), time.Now())
	if err != nil || claims.ClusterID != "x" || claims.ClusterUID != x.GetCluster().GetUid() {
		t.Fatalf("credential %+v, %v", claims, err)
	}
	if _, err := enroll("x", x.GetBootstrap().GetToken()); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("a replayed token: %v", err)
	}
	renewed, err := renew(cred.GetToken())
	if err != nil || renewed.GetToken() == cred.GetToken() {
		t.Fatalf("renew: %v", err)
	}
	// A cluster offline for a while: its agent's expired credential still
	// renews within the grace, never after.
	advance := func(d time.Duration) {
		f.mu.Lock()
		*f.now = f.now.Add(d)
		f.mu.Unlock()
	}
	advance(3 * time.Hour)
	if renewed, err = renew(renewed.GetToken()); err != nil {
		t.Fatalf("renewing a credential expired 2 h ago: %v", err)
	}
	advance(26 * time.Hour)
	if _, err := renew(renewed.GetToken()); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("renewing a credential expired 25 h ago: %v", err)
	}
	advance(-29 * time.Hour)

	// An expired bootstrap token.
	y, err := create("y", "globex")
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	*f.now = f.now.Add(11 * time.Minute)
	f.mu.Unlock()
	if _, err := enroll("y", y.GetBootstrap().GetToken()); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("an expired token: %v", err)
	}
	again, err := r.IssueBootstrapToken(ctx, connect.NewRequest(&tetherv1.IssueBootstrapTokenRequest{Id: "y"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enroll("y", again.Msg.GetBootstrap().GetToken()); err != nil {
		t.Fatalf("a new token: %v", err)
	}

	list, err := r.ListClusters(ctx, connect.NewRequest(&tetherv1.ListClustersRequest{Tenants: []string{"acme"}}))
	if err != nil || len(list.Msg.GetClusters()) != 1 || list.Msg.GetClusters()[0].GetId() != "x" || list.Msg.GetClusters()[0].GetEnrollments() != 1 {
		t.Fatalf("list acme: %v, %v", list, err)
	}
	// Pages of one walk every cluster once, by id; a token not given out
	// is refused.
	var walked []string
	for token, pages := "", 0; ; pages++ {
		page, err := r.ListClusters(ctx, connect.NewRequest(&tetherv1.ListClustersRequest{PageSize: 1, PageToken: token}))
		if err != nil || len(page.Msg.GetClusters()) != 1 || pages > 5 {
			t.Fatalf("page %d after %q: %v, %v", pages, token, page, err)
		}
		walked = append(walked, page.Msg.GetClusters()[0].GetId())
		if token = page.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if !slices.Equal(walked, []string{"x", "y"}) {
		t.Fatalf("pages of one walked %v", walked)
	}
	if _, err := r.ListClusters(ctx, connect.NewRequest(&tetherv1.ListClustersRequest{PageToken: "not/base64!"})); code(err) != connect.CodeInvalidArgument {
		t.Fatalf("a made-up page token: %v", err)
	}

	// Deleting x revokes its credentials, also against an x created again.
	if _, err := r.DeleteCluster(ctx, connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: "x"})); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DeleteCluster(ctx, connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: "x"})); code(err) != connect.CodeNotFound {
		t.Fatalf("deleting twice: %v", err)
	}
	if _, err := renew(renewed.GetToken()); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("renewing a deleted cluster's credential: %v", err)
	}
	if _, err := create("x", "acme"); err != nil {
		t.Fatalf("creating x again: %v", err)
	}
	if _, err := renew(renewed.GetToken()); code(err) != connect.CodeUnauthenticated {
		t.Fatalf("renewing the old x's credential for the new x: %v", err)
	}

	// The projection is a function of the stream: one rebuilt from the
	// start equals the one that followed along.
	rebuilt := clusters.NewProjection()
	fol, _ := clusters.NewFollower(f.js, rebuilt, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go fol.Run(ctx)
	if err := fol.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := all(rebuilt), all(proj); !equalClusters(got, want) {
		t.Fatalf("rebuilt %+v\nlive    %+v", got, want)
	}
}

// all is every cluster of p, by id.
func all(p *clusters.Projection) []clusters.Cluster {
	cs, _ := p.Page(nil, "", math.MaxInt32)
	return cs
}

func equalClusters(a, b []clusters.Cluster) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.Tenant != y.Tenant || x.UID != y.UID || x.Seq != y.Seq || x.Enrollments != y.Enrollments ||
			!x.Created.Equal(y.Created) || (x.Bootstrap == nil) != (y.Bootstrap == nil) {
			return false
		}
	}
	return true
}

// Two registries given the same bootstrap token at once: exactly one
// enrollment succeeds.
func TestBootstrapTokenIsSingleUseAcrossReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFixture(t, ctx)
	r1, _ := f.newRegistry(t, ctx)
	r2, _ := f.newRegistry(t, ctx)
	for round := range 10 {
		id := "c" + string(rune('a'+round))
		created, err := r1.CreateCluster(ctx, connect.NewRequest(&tetherv1.CreateClusterRequest{Id: id, Tenant: "acme"}))
		if err != nil {
			t.Fatal(err)
		}
		tok := created.Msg.GetBootstrap().GetToken()
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for _, r := range []*Registry{r1, r2, r1, r2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := r.Enroll(ctx, connect.NewRequest(&tetherv1.EnrollRequest{ClusterId: id, BootstrapToken: tok}))
				if err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				} else if code(err) != connect.CodeUnauthenticated {
					t.Errorf("enroll: %v", err)
				}
			}()
		}
		wg.Wait()
		if ok != 1 {
			t.Fatalf("round %d: %d enrollments with one token", round, ok)
		}
	}
}

// An enrollment whose answer was lost: the same agent, with its spent
// token and its enrollment id, is answered again with the same
// credential id, while the token would have been valid. Nobody else is:
// not without the id, not with another.
func TestEnrollmentAnsweredAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFixture(t, ctx)
	r, _ := f.newRegistry(t, ctx)
	resp, err := r.CreateCluster(ctx, connect.NewRequest(&tetherv1.CreateClusterRequest{Id: "x", Tenant: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	token := resp.Msg.GetBootstrap().GetToken()
	ver, _ := agentcred.NewVerifier(f.signer.Public())
	enroll := func(id string) (string, error) {
		resp, err := r.Enroll(ctx, connect.NewRequest(&tetherv1.EnrollRequest{ClusterId: "x", BootstrapToken: token, EnrollmentId: id}))
		if err != nil {
			return "", err
		}
		claims, err := ver.Verify(resp.Msg.GetCredential().GetToken(), f.clock())
		if err != nil {
			t.Fatal(err)
		}
		return claims.ID, nil
	}
	first, err := enroll("agent-key")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		id      string
		advance time.Duration
		want    connect.Code
	}{
		{"the same agent again", "agent-key", 0, 0},
		{"another enrollment id", "thief", 0, connect.CodeUnauthenticated},
		{"no enrollment id", "", 0, connect.CodeUnauthenticated},
		{"the same agent once the token would have expired", "agent-key", 11 * time.Minute, connect.CodeUnauthenticated},
	}
	for _, tt := range tests {
		f.mu.Lock()
		*f.now = f.now.Add(tt.advance)
		f.mu.Unlock()
		id, err := enroll(tt.id)
		if ok := err == nil && tt.want == 0 && id == first || err != nil && code(err) == tt.want; !ok {
			t.Errorf("%s: credential %q, %v; want %v and %q", tt.name, id, err, tt.want, first)
		}
	}
}
