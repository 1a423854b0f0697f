package e2e

import (
	"context"
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
