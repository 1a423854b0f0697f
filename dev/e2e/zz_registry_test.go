package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// Heartbeats in the e2e stack (main_test.go): every second, unhealthy
// after three without one.
const e2eHeartbeatTimeout = 3 * time.Second

// agentOf is agent-registry's view of a cluster's agent.
func agentOf(t *testing.T, cluster string) *tetherv1.AgentStatus {
	t.Helper()
	resp, err := env.stack.Clusters().ListClusters(context.Background(), connect.NewRequest(&tetherv1.ListClustersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Msg.GetClusters() {
		if c.GetId() == cluster {
			return c.GetAgent()
		}
	}
	t.Fatalf("no cluster %s", cluster)
	return nil
}

// registryMatches: every stream the registry counts as connected is one the
// subscriber holds, and the reverse.
func registryMatches(t *testing.T) bool {
	t.Helper()
	resp, err := env.stack.Clusters().ListClusters(context.Background(), connect.NewRequest(&tetherv1.ListClustersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	streams := 0
	for _, c := range resp.Msg.GetClusters() {
		if c.GetAgent().GetState() == tetherv1.AgentState_AGENT_STATE_CONNECTED {
			streams += len(c.GetAgent().GetStreams())
		}
	}
	return float64(streams) == subscriberStreams(t)
}

// subscriberStreams is the agent streams every subscriber holds.
func subscriberStreams(t *testing.T) float64 {
	t.Helper()
	n := 0.0
	for i := range env.stack.SubscriberURLs {
		name := "subscriber"
		if i > 0 {
			name = fmt.Sprintf("subscriber-%d", i)
		}
		n += gauge(t, name, "tether_agent_streams")
	}
	return n
}

// agent-registry's view follows the subscribers' own: an agent that
// reconnects shows its new stream, a subscriber that stops reporting makes
// its agents unhealthy without any disconnect event, and the view matches
// the subscriber within a heartbeat period after each.
func TestRegistryFollowsTheAgents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waitFor(t, 2*e2eHeartbeatTimeout, func() bool { return registryMatches(t) })
	a := agentOf(t, "dev")
	if a.GetState() != tetherv1.AgentState_AGENT_STATE_CONNECTED || len(a.GetStreams()) != 1 || a.GetStreams()[0].GetSubscriberId() != "subscriber-0" {
		t.Fatalf("dev's agent: %v", a)
	}
	oldSession, connects := a.GetStreams()[0].GetSessionId(), a.GetConnects()

	// The agent restarts: a disconnect, then a connect on a new stream.
	if err := env.stack.Restart(ctx, "agent"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*e2eHeartbeatTimeout, func() bool {
		a = agentOf(t, "dev")
		return len(a.GetStreams()) == 1 && a.GetStreams()[0].GetSessionId() != oldSession && a.GetConnects() == connects+1
	})
	if !registryMatches(t) {
		t.Fatal("after the agent's restart the registry and the subscriber disagree")
	}

	// The subscriber freezes: no disconnect is ever reported, the
	// heartbeats stop, and the registry calls the agent unhealthy.
	sub := env.stack.Process("subscriber")
	if err := sub.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = sub.Signal(syscall.SIGCONT)
		}
	}()
	waitFor(t, 3*e2eHeartbeatTimeout, func() bool {
		return agentOf(t, "dev").GetState() == tetherv1.AgentState_AGENT_STATE_UNHEALTHY
	})
	if err := sub.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	// Back: the agent's stream (new or the old one) is reported again,
	// and the view matches the subscriber.
	waitFor(t, 30*time.Second, func() bool {
		return agentOf(t, "dev").GetState() == tetherv1.AgentState_AGENT_STATE_CONNECTED && registryMatches(t)
	})
	devStillServed(t)
}
