package registry

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"testing"
	"time"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// TestCountsMatchEachClusterJudgedAlone: the metric's counts, judged a
// group of clusters at a time, are what judging every cluster on its own
// gives, whatever the leases say.
func TestCountsMatchEachClusterJudgedAlone(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const timeout = 20 * time.Second
	stream := func(sub, inc string, connectedAgo time.Duration) *tetherv1.AgentStream {
		return &tetherv1.AgentStream{SubscriberId: sub, SubscriberIncarnation: inc, ConnectedUnix: now.Add(-connectedAgo).Unix(),
			LastHeartbeatUnix: now.Add(-connectedAgo).Unix()}
	}
	tests := []struct {
		name   string
		leases map[string]*lease
		// wantShared: the groups a scrape judges as one; the rest are
		// judged cluster by cluster.
		wantShared int
	}{
		{"every lease fresh", map[string]*lease{
			"s0": {incarnations: []string{"a"}, at: now.Add(-time.Second)},
			"s1": {incarnations: []string{"b"}, at: now.Add(-time.Second)}}, 5},
		{"one lease stale", map[string]*lease{
			"s0": {incarnations: []string{"a"}, at: now.Add(-time.Second)},
			"s1": {incarnations: []string{"b"}, at: now.Add(-time.Minute)}}, 5},
		{"a restarted subscriber's lease names its new incarnation only", map[string]*lease{
			"s0": {incarnations: []string{"a"}, at: now.Add(-time.Second)},
			"s1": {incarnations: []string{"c"}, at: now.Add(-time.Second)}}, 4},
		{"no lease seen yet", map[string]*lease{}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &AgentView{cfg: AgentViewConfig{Now: func() time.Time { return now }}, leases: newLeases(timeout, slog.New(slog.NewTextHandler(io.Discard, nil))),
				model: map[string]*tetherv1.AgentStatus{}, groups: newGroups()}
			maps.Copy(v.leases.m, tt.leases)
			// 100 clusters on both subscribers, 50 on s0 alone, 20 with a
			// young stream on s1's new incarnation, 10 from before ADR 014,
			// 5 disconnected; then some move and some go.
			for i := range 185 {
				var st *tetherv1.AgentStatus
				switch {
				case i < 100:
					st = &tetherv1.AgentStatus{Streams: []*tetherv1.AgentStream{stream("s0", "a", time.Hour), stream("s1", "b", time.Hour)}}
				case i < 150:
					st = &tetherv1.AgentStatus{Streams: []*tetherv1.AgentStream{stream("s0", "a", time.Hour)}}
				case i < 170:
					st = &tetherv1.AgentStatus{Streams: []*tetherv1.AgentStream{stream("s0", "a", time.Hour), stream("s1", "c", time.Duration(i-150)*time.Second)}}
				case i < 180:
					st = &tetherv1.AgentStatus{Streams: []*tetherv1.AgentStream{stream("s0", "", time.Duration(i-170)*5*time.Second)}}
				default:
					st = &tetherv1.AgentStatus{}
				}
				v.put(fmt.Sprintf("c-%03d", i), st)
			}
			v.put("c-000", &tetherv1.AgentStatus{Streams: []*tetherv1.AgentStream{stream("s1", "b", time.Hour)}})
			v.put("c-001", nil)
			v.put("c-002", nil)

			want := map[[2]string]int{}
			for _, st := range v.model {
				sub := "-"
				if n := len(st.GetStreams()); n > 0 {
					sub = st.GetStreams()[n-1].GetSubscriberId()
				}
				want[[2]string{stateName(v.state(st, now)), sub}]++
			}
			if got := v.counts(now); !maps.Equal(got, want) {
				t.Fatalf("counts = %v, judged one by one %v", got, want)
			}
			shared := 0
			for _, gr := range v.groups.m {
				if _, ok := v.groupState(gr, now); ok {
					shared++
				}
			}
			if len(v.groups.m) != 6 || shared != tt.wantShared {
				t.Fatalf("%d groups, %d judged as one; want 6 and %d", len(v.groups.m), shared, tt.wantShared)
			}
		})
	}
}
