package subscriber

import (
	"context"
	"errors"
	"testing"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/lib/agentcred"
	"github.com/tether-dev/tether/lib/clusters"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// laggingCatalog is a real projection that has not yet read the events
// behind it; Sync applies them, as the follower would.
type laggingCatalog struct {
	*clusters.Projection
	t       *testing.T
	behind  []*tetherv1.ClusterEvent
	seq     uint64
	syncErr error
	syncs   int
}

func (c *laggingCatalog) Sync(context.Context) error {
	c.syncs++
	if c.syncErr != nil {
		return c.syncErr
	}
	for _, ev := range c.behind {
		c.seq++
		if err := c.Apply(c.seq, ev); err != nil {
			c.t.Fatal(err)
		}
	}
	c.behind = nil
	return nil
}

func created(id, uid string) *tetherv1.ClusterEvent {
	return &tetherv1.ClusterEvent{ClusterId: id, Kind: &tetherv1.ClusterEvent_Created{Created: &tetherv1.ClusterCreated{Tenant: "acme", Uid: uid}}}
}

func deleted(id string) *tetherv1.ClusterEvent {
	return &tetherv1.ClusterEvent{ClusterId: id, Kind: &tetherv1.ClusterEvent_Deleted{Deleted: &tetherv1.ClusterDeleted{}}}
}

func TestConfirmCluster(t *testing.T) {
	claims := agentcred.Claims{ClusterID: "dev", ClusterUID: "uid-1"}
	tests := []struct {
		name      string
		projected []*tetherv1.ClusterEvent // read before the agent connects
		behind    []*tetherv1.ClusterEvent // in the stream, not yet read
		syncErr   error
		want      connect.Code // 0: confirmed
		wantSyncs int
	}{
		{name: "projected", projected: []*tetherv1.ClusterEvent{created("dev", "uid-1")}},
		{name: "created a moment ago", behind: []*tetherv1.ClusterEvent{created("dev", "uid-1")}, wantSyncs: 1},
		{name: "never created", want: connect.CodeUnauthenticated, wantSyncs: 1},
		{name: "deleted", projected: []*tetherv1.ClusterEvent{created("dev", "uid-1"), deleted("dev")}, want: connect.CodeUnauthenticated, wantSyncs: 1},
		// Confirmed; Revoke closes the stream when the deletion is read.
		{name: "deleted a moment ago", projected: []*tetherv1.ClusterEvent{created("dev", "uid-1")}, behind: []*tetherv1.ClusterEvent{deleted("dev")}},
		{name: "created again under the same id", projected: []*tetherv1.ClusterEvent{created("dev", "uid-1"), deleted("dev"), created("dev", "uid-2")},
			want: connect.CodeUnauthenticated, wantSyncs: 1},
		{name: "stream unreachable", behind: []*tetherv1.ClusterEvent{created("dev", "uid-1")}, syncErr: errors.New("no responders"),
			want: connect.CodeUnavailable, wantSyncs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cat := &laggingCatalog{Projection: clusters.NewProjection(), t: t, syncErr: tt.syncErr}
			for _, ev := range tt.projected {
				cat.seq++
				if err := cat.Apply(cat.seq, ev); err != nil {
					t.Fatal(err)
				}
			}
			cat.behind = tt.behind
			err := confirmCluster(context.Background(), cat, claims)
			if got := connect.CodeOf(err); (err == nil) != (tt.want == 0) || (err != nil && got != tt.want) {
				t.Fatalf("confirmCluster = %v (code %v), want code %v", err, got, tt.want)
			}
			if cat.syncs != tt.wantSyncs {
				t.Fatalf("%d syncs, want %d: a projected cluster costs no stream lookup, a miss one", cat.syncs, tt.wantSyncs)
			}
		})
	}
}
