package e2e

import (
	"context"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An idle agent leaves at once on SIGTERM, with exit code 0, and a new one
// takes its place: requests flow again. (Named to run last: it restarts
// the agent every other test uses.)
func TestAgentDrainsAndReconnects(t *testing.T) {
	p := env.stack.Process("agent")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(time.Minute):
		t.Fatal("idle agent still running a minute after SIGTERM (its drain limit is 3m)")
	}
	if c := p.ExitCode(); c != 0 {
		t.Fatalf("agent exit code %d: %v", c, p.ExitError())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.stack.Restart(ctx, "agent"); err != nil {
		t.Fatal(err)
	}
	if out := must(t, kubeconfig(t, "admin"), "", "get", "ns", "default", "-o", "name"); !strings.Contains(out, "namespace/default") {
		t.Fatalf("after the agent came back: %q", out)
	}
}

func kill(t *testing.T, name string) {
	t.Helper()
	p := env.stack.Process(name)
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
}

func restart(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.stack.Restart(ctx, name); err != nil {
		t.Fatal(err)
	}
}

// A router that dies leaves nothing running at the agent: the subscriber's
// idle probe finds the router gone and cancels its watches.
func TestDeadRouterLeavesNothingAtTheAgent(t *testing.T) {
	before := gauge(t, "agent", "tether_agent_requests_in_flight")
	w := openWatch(t, context.Background())
	defer w.Close()
	waitFor(t, 10*time.Second, func() bool { return gauge(t, "agent", "tether_agent_requests_in_flight") > before })
	kill(t, "router")
	waitFor(t, 30*time.Second, func() bool { return gauge(t, "agent", "tether_agent_requests_in_flight") == before })
	restart(t, "router")
	must(t, kubeconfig(t, "admin"), "", "get", "ns", "default")
}

// A subscriber that dies ends its watches at the client (which then
// reconnects, as client-go does), and the agent comes back through the new
// subscriber.
func TestDeadSubscriberEndsWatchesAndTheAgentReconnects(t *testing.T) {
	w := openWatch(t, context.Background())
	defer w.Close()
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, w); ended <- err }()
	kill(t, "subscriber")
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the watch outlived its subscriber by 30s")
	}
	restart(t, "subscriber")
	waitFor(t, 60*time.Second, func() bool {
		_, _, err := kubectl(t, kubeconfig(t, "admin"), "", "get", "ns", "default")
		return err == nil
	})
}
