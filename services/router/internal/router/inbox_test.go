package router

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tether-dev/tether/lib/clusters"
	"github.com/tether-dev/tether/lib/natslink"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/lib/telemetry"
)

// The inbox is split into shards, each a subscription of its own; every
// call hears its subscriber on whichever shard its subject names.
func TestInboxShards(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := New(Config{ID: "router-0", NATS: nc, Catalog: noCatalog{}, InboxShards: 3,
		Instruments: telemetry.Instruments{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
			Tracer: noop.NewTracerProvider().Tracer(""), Propagator: propagation.TraceContext{}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.inboxes) != 3 {
		t.Fatalf("%d inboxes, want 3", len(s.inboxes))
	}
	prefixes := map[string]bool{}
	for range 6 {
		c := s.newCall()
		prefixes[c.inbox[:len(c.inbox)-len(subject.Router("", c.id))]] = true
		// A subscriber's ack names the agent stream that holds the call.
		if err := natslink.Ack(nc, c.inbox, subject.Session(subject.NewSession(subject.NewProcess()), 1)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.answered:
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d on %s never heard its ack", c.id, c.inbox)
		}
	}
	if len(prefixes) != 3 {
		t.Fatalf("calls went to %d shards, want 3: %v", len(prefixes), prefixes)
	}
}

type noCatalog struct{}

func (noCatalog) Authorize(string, []string) (clusters.Cluster, bool) {
	return clusters.Cluster{}, false
}
