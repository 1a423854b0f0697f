package e2e

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
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

// A subscriber that dies ends the watches it carried that cannot go on
// from a known point (these start from the current state, which comes as
// synthetic events in no order) at the client, which then watches again
// as client-go does; watches on the agent's other stream carry on. The
// agent comes back through the new subscriber.
func TestDeadSubscriberEndsWatchesAndTheAgentReconnects(t *testing.T) {
	before := gauge(t, "subscriber", "tether_subscriber_requests_in_flight")
	var ended atomic.Int32
	for range 6 {
		w := openWatch(t, context.Background())
		defer w.Close()
		go func() {
			_, _ = io.Copy(io.Discard, w)
			ended.Add(1)
		}()
	}
	waitFor(t, 10*time.Second, func() bool {
		return gauge(t, "subscriber", "tether_subscriber_requests_in_flight")+gauge(t, "subscriber-1", "tether_subscriber_requests_in_flight") >= before+6
	})
	onIt := int32(gauge(t, "subscriber", "tether_subscriber_requests_in_flight") - before)
	kill(t, "subscriber")
	waitFor(t, 30*time.Second, func() bool { return ended.Load() >= onIt })
	time.Sleep(2 * time.Second) // the routers' peer probe has run: no more end
	if n := ended.Load(); n != onIt {
		t.Fatalf("%d watches ended; %d were on the subscriber that died", n, onIt)
	}
	restart(t, "subscriber")
	waitFor(t, 60*time.Second, func() bool {
		_, _, err := kubectl(t, kubeconfig(t, "admin"), "", "get", "ns", "default")
		return err == nil && gauge(t, "agent", "tether_agent_stream_connected") >= 2
	})
}

// On SIGTERM the gateway takes no new connections but lets an open exec
// session finish before it exits, with exit code 0; a new gateway serves.
func TestGatewayLetsExecSessionsFinishOnSIGTERM(t *testing.T) {
	pod := sleeper(t)
	cfg := throughTether(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in, typed := io.Pipe()
	var out lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- execIn(ctx, t, cfg, websocketExecutor, pod, in, &out, io.Discard, "sh", "-c", "read line; echo got $line")
	}()
	waitFor(t, 30*time.Second, func() bool { return gauge(t, "gateway", "tether_gateway_upgraded_connections") == 1 })

	p := env.stack.Process("gateway")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if p.Exited() {
		t.Fatalf("gateway exited with an exec session open: %v", p.ExitError())
	}
	if _, err := io.WriteString(typed, "hello\n"); err != nil {
		t.Fatal(err)
	}
	typed.Close()
	if err := <-done; err != nil || out.String() != "got hello\n" {
		t.Fatalf("the session across the gateway's drain: %q, %v", out.String(), err)
	}
	select {
	case <-p.Done():
	case <-time.After(time.Minute):
		t.Fatal("gateway still running after its last session ended")
	}
	if c := p.ExitCode(); c != 0 {
		t.Fatalf("gateway exit code %d: %v", c, p.ExitError())
	}
	restart(t, "gateway")
	if out := must(t, kubeconfig(t, "admin"), "", "get", "ns", "default", "-o", "name"); !strings.Contains(out, "namespace/default") {
		t.Fatalf("after the gateway came back: %q", out)
	}
}
