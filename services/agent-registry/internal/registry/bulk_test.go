package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// EnsureClusters creates what is missing, gives every cluster a token that
// enrolls its agent, keeps existing clusters (and their uids), refuses bad
// batches whole, and takes a thousand clusters in one call.
func TestEnsureClusters(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newFixture(t, ctx)
	r, _ := f.newRegistry(t, ctx)
	ensure := func(tenant string, ids ...string) (*tetherv1.EnsureClustersResponse, error) {
		req := &tetherv1.EnsureClustersRequest{}
		for _, id := range ids {
			req.Clusters = append(req.Clusters, &tetherv1.CreateClusterRequest{Id: id, Tenant: tenant})
		}
		creq := connect.NewRequest(req)
		creq.Header().Set(ActorHeader, "ops")
		resp, err := r.EnsureClusters(ctx, creq)
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	existing, err := r.CreateCluster(ctx, connect.NewRequest(&tetherv1.CreateClusterRequest{Id: "c-00001", Tenant: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, MaxEnsure)
	for i := range ids {
		ids[i] = fmt.Sprintf("c-%05d", i)
	}
	start := time.Now()
	got, err := ensure("acme", ids...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d clusters ensured in %v", len(ids), time.Since(start))
	if len(got.GetClusters()) != len(ids) {
		t.Fatalf("%d answers for %d clusters", len(got.GetClusters()), len(ids))
	}
	for i, c := range got.GetClusters() {
		if c.GetCluster().GetId() != ids[i] || c.GetCluster().GetTenant() != "acme" || c.GetBootstrap().GetToken() == "" {
			t.Fatalf("answer %d: %v", i, c)
		}
	}
	if got.GetClusters()[1].GetCluster().GetUid() != existing.Msg.GetCluster().GetUid() {
		t.Fatal("an existing cluster was created again (its uid changed)")
	}
	// Each token enrolls its own cluster's agent; the one the cluster had
	// before this call still works too, until it is used or expires.
	for _, i := range []int{0, 1, 999} {
		c := got.GetClusters()[i]
		if _, err := r.Enroll(ctx, connect.NewRequest(&tetherv1.EnrollRequest{ClusterId: ids[i], BootstrapToken: c.GetBootstrap().GetToken()})); err != nil {
			t.Fatalf("enrolling %s: %v", ids[i], err)
		}
	}
	// Again: nothing created twice, new tokens for all.
	again, err := ensure("acme", ids[:3]...)
	if err != nil || again.GetClusters()[0].GetCluster().GetUid() != got.GetClusters()[0].GetCluster().GetUid() ||
		again.GetClusters()[0].GetBootstrap().GetToken() == got.GetClusters()[0].GetBootstrap().GetToken() {
		t.Fatalf("ensuring again: %v %v", again, err)
	}
	for name, tc := range map[string]struct {
		tenant string
		ids    []string
		code   connect.Code
	}{
		"none":              {"acme", nil, connect.CodeInvalidArgument},
		"too many":          {"acme", append(ids, "c-99999"), connect.CodeInvalidArgument},
		"twice in one call": {"acme", []string{"d-1", "d-1"}, connect.CodeInvalidArgument},
		"a bad id":          {"acme", []string{"d-2", "D.3"}, connect.CodeInvalidArgument},
		"a bad tenant":      {"*", []string{"d-4"}, connect.CodeInvalidArgument},
		"another tenant's":  {"globex", []string{"d-5", "c-00002"}, connect.CodeFailedPrecondition},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ensure(tc.tenant, tc.ids...); connect.CodeOf(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
		})
	}
	// A refused call created nothing.
	if _, err := r.IssueBootstrapToken(ctx, connect.NewRequest(&tetherv1.IssueBootstrapTokenRequest{Id: "d-5"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("d-5 of a refused call: %v", err)
	}
}
