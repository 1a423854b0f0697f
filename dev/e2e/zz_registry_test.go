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

// Leases in the e2e stack (main_test.go): renewed every second, unhealthy
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

// registryMatches: every stream the registry counts as alive (vouched for
// by a lease within the timeout) is one a subscriber holds, and the
// reverse, stream by stream for each subscriber.
func registryMatches(t *testing.T) bool {
	t.Helper()
	resp, err := env.stack.Clusters().ListClusters(context.Background(), connect.NewRequest(&tetherv1.ListClustersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	bySub := map[string]float64{}
	for _, c := range resp.Msg.GetClusters() {
		for _, s := range c.GetAgent().GetStreams() {
			if now.Sub(time.Unix(s.GetLastHeartbeatUnix(), 0)) <= e2eHeartbeatTimeout+time.Second {
				bySub[s.GetSubscriberId()]++
			}
		}
	}
	for i, name := range subscribers() {
		if bySub[fmt.Sprintf("subscriber-%d", i)] != gauge(t, name, "tether_agent_streams") {
			return false
		}
	}
	return true
}

// agent-registry's view follows the subscribers' own: an agent that
// reconnects shows its new streams; a subscriber that freezes loses its
// stream from the view as soon as the agent, connected again elsewhere,
// says so, with the agent connected all along; subscribers that all stop
// reporting make the agent unhealthy without any disconnect event; and the
// view matches the subscribers within a heartbeat period after each.
func TestRegistryFollowsTheAgents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waitFor(t, 2*e2eHeartbeatTimeout, func() bool { return registryMatches(t) })
	a := agentOf(t, "dev")
	if a.GetState() != tetherv1.AgentState_AGENT_STATE_CONNECTED || len(a.GetStreams()) != 2 {
		t.Fatalf("dev's agent: %v", a)
	}
	old := map[string]bool{}
	for _, s := range a.GetStreams() {
		old[s.GetSessionId()] = true
	}
	connects := a.GetConnects()

	// The agent restarts: disconnects, then connects on new streams.
	if err := env.stack.Restart(ctx, "agent"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*e2eHeartbeatTimeout, func() bool {
		a = agentOf(t, "dev")
		for _, s := range a.GetStreams() {
			if old[s.GetSessionId()] {
				return false
			}
		}
		return len(a.GetStreams()) == 2 && a.GetConnects() >= connects+2 && registryMatches(t)
	})

	// subscriber-0 freezes: it never reports its stream's end. The agent
	// finds the stream dead, connects again elsewhere and says which
	// stream ended; the registry drops it, and the agent was connected
	// throughout, served by subscriber-1.
	sub := env.stack.Process("subscriber")
	if err := sub.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := []string{"subscriber"}
	defer func() {
		for _, name := range frozen {
			_ = env.stack.Process(name).Signal(syscall.SIGCONT)
		}
	}()
	waitFor(t, 30*time.Second, func() bool {
		a := agentOf(t, "dev")
		if a.GetState() != tetherv1.AgentState_AGENT_STATE_CONNECTED {
			t.Fatalf("with one subscriber frozen the agent is %v", a.GetState())
		}
		for _, s := range a.GetStreams() {
			if s.GetSubscriberId() == "subscriber-0" {
				return false
			}
		}
		return true
	})
	devStillServed(t)

	// Both subscribers freeze: nobody reports, their leases run out, and
	// the registry calls the agent unhealthy; one timeout later it sweeps
	// the streams, as events (ADR 014).
	if err := env.stack.Process("subscriber-1").Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen = append(frozen, "subscriber-1")
	waitFor(t, 3*e2eHeartbeatTimeout, func() bool {
		return agentOf(t, "dev").GetState() == tetherv1.AgentState_AGENT_STATE_UNHEALTHY
	})
	waitFor(t, 3*e2eHeartbeatTimeout, func() bool {
		return agentOf(t, "dev").GetState() == tetherv1.AgentState_AGENT_STATE_DISCONNECTED
	})
	for _, name := range frozen {
		if err := env.stack.Process(name).Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	frozen = nil
	// Back: each subscriber finds its lease lapsed and announces its
	// streams again, and the view matches the subscribers.
	waitFor(t, 30*time.Second, func() bool {
		return agentOf(t, "dev").GetState() == tetherv1.AgentState_AGENT_STATE_CONNECTED && registryMatches(t)
	})
	devStillServed(t)
}
