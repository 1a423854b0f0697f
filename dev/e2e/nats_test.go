package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// intruder is the NATS client name of the test that misbehaves on purpose;
// the check after all tests ignores the violations it causes.
const intruder = "e2e-intruder"

// Each service's NATS user may only do its own part: what a router or a
// subscriber, or a service with nothing to do on NATS yet, tries beyond
// that is refused by the server. Each router and subscriber instance logs
// in as a user of its own (router-0, router-1, ...), which reads only its
// own router inbox and its own _INBOX (ADR 012).
func TestNATSUsersStayInTheirLanes(t *testing.T) {
	tests := []struct {
		user      string
		publish   string // "" for none
		subscribe string
		queue     string
	}{
		{user: "router-0", publish: "tether.rtr.someone.r.1"},
		{user: "router-0", subscribe: "tether.req.>"},
		{user: "router-0", subscribe: "tether.sess.>"},
		// One router never reads another's answers, nor anybody's
		// replies on another inbox (JetStream's API among them).
		{user: "router-0", subscribe: "tether.rtr.router-1.>"},
		{user: "router-0", subscribe: "tether.rtr.*.*.*"},
		{user: "router-0", subscribe: "tether.rtr.>"},
		{user: "router-1", subscribe: "tether.rtr.router-0.router-0-abc.*"},
		{user: "router-0", subscribe: "_INBOX_router-1.>"},
		{user: "router-0", subscribe: "_INBOX_agent-registry.>"},
		{user: "router-0", subscribe: "_INBOX.>"},
		{user: "subscriber-0", subscribe: "_INBOX_subscriber-1.>"},
		{user: "agent-registry", subscribe: "_INBOX_router-0.>"},
		{user: "subscriber-0", publish: "tether.req.dev"},
		{user: "subscriber-0", publish: "tether.sess.s.1"},
		{user: "subscriber-0", subscribe: "tether.rtr.>"},
		// A subscriber takes requests only in the subscribers' queue
		// group: never a copy of every request another one serves.
		{user: "subscriber-0", subscribe: "tether.req.dev"},
		{user: "subscriber-0", subscribe: "tether.req.dev", queue: "eavesdrop"},
		// Only agent-registry writes cluster events or manages their
		// stream: nobody else can forge a cluster, or erase them all.
		{user: "router-0", publish: "tether.clusters.forged"},
		{user: "subscriber-0", publish: "tether.clusters.dev"},
		{user: "router-0", publish: "$JS.API.STREAM.DELETE.CLUSTERS"},
		{user: "subscriber-0", publish: "$JS.API.STREAM.PURGE.CLUSTERS"},
		{user: "subscriber-0", publish: "$JS.API.STREAM.UPDATE.CLUSTERS"},
		{user: "agent-registry", publish: "$JS.API.STREAM.DELETE.CLUSTERS"},
		{user: "agent-registry", publish: "tether.req.dev"},
		{user: "agent-registry", subscribe: "tether.req.>"},
		{user: "audit", publish: "tether.req.dev"},
		{user: "audit", subscribe: "tether.>"},
	}
	for _, tt := range tests {
		t.Run(tt.user+" "+tt.publish+" "+tt.subscribe+" "+tt.queue, func(t *testing.T) {
			pw, err := os.ReadFile(filepath.Join(env.dir, "state", "nats-users", tt.user))
			if err != nil {
				t.Fatal(err)
			}
			violations := make(chan error, 4)
			nc, err := nats.Connect(env.stack.NATSURL, nats.Name(intruder), nats.UserInfo(tt.user, string(pw)), nats.RootCAs(env.stack.CAFile),
				nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if tt.subscribe != "" {
				if _, err := nc.QueueSubscribeSync(tt.subscribe, tt.queue); err != nil {
					t.Fatal(err)
				}
			}
			if tt.publish != "" {
				if err := nc.Publish(tt.publish, []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			_ = nc.Flush()
			select {
			case err := <-violations:
				if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
					t.Fatalf("refused with %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s was allowed to publish %q / subscribe %q", tt.user, tt.publish, tt.subscribe)
			}
		})
	}
	// The server logs each refusal with the client's name: that is how the
	// check after all tests tells the services' refusals from these.
	b, err := os.ReadFile(env.stack.Process("natsd").LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), intruder+`" - "`); n < len(tests) {
		t.Errorf("natsd logged %d refusals naming %s, want %d: the check after the tests cannot tell them apart", n, intruder, len(tests))
	}
	// What each instance needs is still allowed: its own inbox, and
	// requests in the subscribers' queue group.
	for _, ok := range []struct{ user, subject, queue string }{
		{"router-1", "tether.rtr.router-1.router-1-abc.*", ""},
		{"router-1", "_INBOX_router-1.x", ""},
		{"subscriber-1", "tether.req.e2e-nobody", "subscribers"},
	} {
		pw, err := os.ReadFile(filepath.Join(env.dir, "state", "nats-users", ok.user))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(env.stack.NATSURL, nats.Name(intruder), nats.UserInfo(ok.user, string(pw)), nats.RootCAs(env.stack.CAFile))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.QueueSubscribeSync(ok.subject, ok.queue); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil || nc.LastError() != nil {
			t.Errorf("%s subscribing to %s: %v %v", ok.user, ok.subject, err, nc.LastError())
		}
		nc.Close()
	}
	// Without a user, nothing at all.
	if nc, err := nats.Connect(env.stack.NATSURL, nats.Name(intruder), nats.MaxReconnects(0), nats.RootCAs(env.stack.CAFile)); err == nil {
		nc.Close()
		t.Fatal("NATS accepted a client without credentials")
	}
}

// natsViolations lists what NATS refused to the services themselves during
// the run: a permission missing from the stack's users would drop frames
// silently otherwise.
func natsViolations() string {
	p := env.stack.Process("natsd")
	if p == nil {
		return ""
	}
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if (strings.Contains(line, "Publish Violation") || strings.Contains(line, "Subscription Violation")) && !strings.Contains(line, intruder) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
