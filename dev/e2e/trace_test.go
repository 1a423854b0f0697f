package e2e

import (
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// collector is an OTLP/HTTP trace receiver: the services export to it as
// they would to Jaeger or an OpenTelemetry Collector.
type collector struct {
	ln  net.Listener
	mu  sync.Mutex
	svc map[string]map[string]bool // trace id → services with spans in it
	// trace id → service → the tether.cluster_id its spans carry
	cluster map[string]map[string]string
}

func startCollector() (*collector, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &collector{ln: ln, svc: map[string]map[string]bool{}, cluster: map[string]map[string]string{}}
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(r.Body)
			req := &coltrace.ExportTraceServiceRequest{}
			if err != nil || proto.Unmarshal(b, req) != nil {
				http.Error(w, "bad export", http.StatusBadRequest)
				return
			}
			c.mu.Lock()
			for _, rs := range req.ResourceSpans {
				name := ""
				for _, a := range rs.GetResource().GetAttributes() {
					if a.Key == "service.name" {
						name = a.GetValue().GetStringValue()
					}
				}
				for _, ss := range rs.ScopeSpans {
					for _, sp := range ss.Spans {
						id := hex.EncodeToString(sp.TraceId)
						if c.svc[id] == nil {
							c.svc[id] = map[string]bool{}
						}
						c.svc[id][name] = true
						for _, a := range sp.Attributes {
							if a.Key == "tether.cluster_id" {
								if c.cluster[id] == nil {
									c.cluster[id] = map[string]string{}
								}
								c.cluster[id][name] = a.GetValue().GetStringValue()
							}
						}
					}
				}
			}
			c.mu.Unlock()
			w.Header().Set("Content-Type", "application/x-protobuf")
			b, _ = proto.Marshal(&coltrace.ExportTraceServiceResponse{})
			_, _ = w.Write(b)
		}))
	}()
	return c, nil
}

func (c *collector) endpoint() string { return "http://" + c.ln.Addr().String() }

func (c *collector) services(traceID string) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]bool{}
	for k := range c.svc[traceID] {
		out[k] = true
	}
	return out
}

// clusterIDs is the tether.cluster_id each service's spans of a trace carry.
func (c *collector) clusterIDs(traceID string) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]string{}
	for k, v := range c.cluster[traceID] {
		out[k] = v
	}
	return out
}

// One request is one trace across gateway, router, subscriber and agent,
// joined to the caller's own trace context; gateway, router and subscriber
// name its cluster there (the metrics do not: their labels are bounded).
func TestOneRequestIsOneTrace(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	hdr := http.Header{"Traceparent": {"00-" + traceID + "-00f067aa0ba902b7-01"}}
	resp := call(t, "GET", "/clusters/dev/api/v1/namespaces/default", token("admin"), hdr, nil)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	want := []string{"gateway", "router", "subscriber", "agent"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := env.collector.services(traceID)
		missing := []string{}
		for _, s := range want {
			if !got[s] {
				missing = append(missing, s)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s has spans from %v; missing %v", traceID, got, missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ids := env.collector.clusterIDs(traceID)
	for _, s := range []string{"gateway", "router", "subscriber"} {
		if ids[s] != "dev" {
			t.Errorf("%s's spans carry cluster id %q, want dev (all: %v)", s, ids[s], ids)
		}
	}
}
