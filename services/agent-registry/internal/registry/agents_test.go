package registry

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
)

func agentEvent(cluster, session, sub string, at time.Time, kind any) *tetherv1.AgentEvent {
	ev := &tetherv1.AgentEvent{ClusterId: cluster, SessionId: session, SubscriberId: sub, TimeUnixNano: at.UnixNano()}
	switch k := kind.(type) {
	case *tetherv1.AgentConnected:
		ev.Kind = &tetherv1.AgentEvent_Connected{Connected: k}
	case *tetherv1.AgentDisconnected:
		ev.Kind = &tetherv1.AgentEvent_Disconnected{Disconnected: k}
	case *tetherv1.AgentHeartbeat:
		ev.Kind = &tetherv1.AgentEvent_Heartbeat{Heartbeat: k}
	}
	return ev
}

func TestFoldAndState(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	st := &tetherv1.AgentStatus{}
	timeout := 30 * time.Second
	if got := State(st, t0, timeout); got != tetherv1.AgentState_AGENT_STATE_DISCONNECTED {
		t.Fatalf("empty: %v", got)
	}
	Fold(st, agentEvent("x", "s1", "sub-0", t0, &tetherv1.AgentConnected{AgentVersion: "v1"}))
	Fold(st, agentEvent("x", "s2", "sub-1", t0.Add(time.Second), &tetherv1.AgentConnected{}))
	Fold(st, agentEvent("x", "s1", "sub-0", t0.Add(10*time.Second), &tetherv1.AgentHeartbeat{}))
	tests := []struct {
		name string
		at   time.Time
		want tetherv1.AgentState
	}{
		{"fresh heartbeat", t0.Add(20 * time.Second), tetherv1.AgentState_AGENT_STATE_CONNECTED},
		// Kept to the second: the heartbeat of second 10 may have come at
		// 10.9.
		{"within a second's rounding", t0.Add(41 * time.Second), tetherv1.AgentState_AGENT_STATE_CONNECTED},
		{"heartbeats stopped, no disconnect", t0.Add(42 * time.Second), tetherv1.AgentState_AGENT_STATE_UNHEALTHY},
	}
	for _, tt := range tests {
		if got := State(st, tt.at, timeout); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	Fold(st, agentEvent("x", "s1", "sub-0", t0.Add(50*time.Second), &tetherv1.AgentDisconnected{Reason: "bye"}))
	Fold(st, agentEvent("x", "s2", "sub-1", t0.Add(51*time.Second), &tetherv1.AgentDisconnected{}))
	if got := State(st, t0.Add(52*time.Second), timeout); got != tetherv1.AgentState_AGENT_STATE_DISCONNECTED || st.GetConnects() != 2 || len(st.GetHistory()) != 4 {
		t.Fatalf("after both disconnects: %v, %d connects, %d history", got, st.GetConnects(), len(st.GetHistory()))
	}
	// A heartbeat whose connect was lost still proves a stream.
	Fold(st, agentEvent("x", "s3", "sub-2", t0.Add(60*time.Second), &tetherv1.AgentHeartbeat{}))
	if got := State(st, t0.Add(61*time.Second), timeout); got != tetherv1.AgentState_AGENT_STATE_CONNECTED {
		t.Fatalf("after a lone heartbeat: %v", got)
	}
}

// The bucket is a function of the stream: deleted and rebuilt, it holds
// the same as before.
// A stream's end reported twice (its subscriber and the agent) counts
// once, and a heartbeat that straggles in after the end (from a subscriber
// cut off from NATS for a while) does not bring the stream back.
func TestFoldTakesEachEndOnce(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	st := &tetherv1.AgentStatus{}
	Fold(st, agentEvent("x", "s1", "sub-0", t0, &tetherv1.AgentConnected{}))
	Fold(st, agentEvent("x", "s1", "sub-1", t0.Add(time.Second), &tetherv1.AgentDisconnected{Reason: "the agent reports the stream ended"}))
	Fold(st, agentEvent("x", "s1", "sub-0", t0.Add(2*time.Second), &tetherv1.AgentHeartbeat{}))
	Fold(st, agentEvent("x", "s1", "sub-0", t0.Add(3*time.Second), &tetherv1.AgentDisconnected{Reason: "stream ended"}))
	if len(st.GetStreams()) != 0 || len(st.GetHistory()) != 2 {
		t.Fatalf("streams %v, history %v", st.GetStreams(), st.GetHistory())
	}
}

func TestAgentViewRebuildsFromTheStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFixture(t, ctx)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	viewCtx, stopView := context.WithCancel(ctx)
	v, err := StartAgentView(viewCtx, f.js, 1, log)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var events []*tetherv1.AgentEvent
	for i, c := range []string{"a", "b", "c"} {
		events = append(events,
			agentEvent(c, "s-"+c, "sub-0", t0, &tetherv1.AgentConnected{AgentVersion: "v1"}),
			agentEvent(c, "s-"+c, "sub-0", t0.Add(time.Duration(i+1)*time.Second), &tetherv1.AgentHeartbeat{}))
	}
	events = append(events, agentEvent("b", "s-b", "sub-0", t0.Add(5*time.Second), &tetherv1.AgentDisconnected{Reason: "gone"}),
		agentEvent("b", "s-b2", "sub-1", t0.Add(6*time.Second), &tetherv1.AgentConnected{}))
	for _, ev := range events {
		subj, _ := subject.AgentEvents(ev.GetClusterId())
		b, _ := proto.Marshal(ev)
		if _, err := f.js.Publish(ctx, subj, b); err != nil {
			t.Fatal(err)
		}
	}
	waitCaughtUp(t, ctx, v)
	before := snapshot(t, ctx, v, "a", "b", "c")
	if got := before["b"]; len(got.GetStreams()) != 1 || got.GetStreams()[0].GetSubscriberId() != "sub-1" || got.GetConnects() != 2 {
		t.Fatalf("b = %v", got)
	}
	stopView()
	if err := f.js.DeleteKeyValue(ctx, AgentsBucket); err != nil {
		t.Fatal(err)
	}
	v2, err := StartAgentView(ctx, f.js, 1, log)
	if err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, ctx, v2)
	after := snapshot(t, ctx, v2, "a", "b", "c")
	for c := range before {
		if !proto.Equal(before[c], after[c]) {
			t.Fatalf("cluster %s rebuilt\n%v\nwas\n%v", c, after[c], before[c])
		}
	}
}

func waitCaughtUp(t *testing.T, ctx context.Context, v *AgentView) {
	t.Helper()
	for {
		done, err := v.CaughtUp(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("the view did not catch up")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func snapshot(t *testing.T, ctx context.Context, v *AgentView, clusters ...string) map[string]*tetherv1.AgentStatus {
	t.Helper()
	out := map[string]*tetherv1.AgentStatus{}
	for _, c := range clusters {
		st, err := v.Get(ctx, c)
		if err != nil || st == nil {
			t.Fatalf("%s: %v, %v", c, st, err)
		}
		out[c] = st
	}
	return out
}
