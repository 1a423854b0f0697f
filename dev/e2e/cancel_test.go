package e2e

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// gauge reads one unlabelled gauge from a service's /metrics.
func gauge(t *testing.T, service, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + env.stack.Admin[service] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no %s", service, name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A client that goes away cancels its request at every hop, down to the
// call the agent made to the kube-apiserver.
func TestClientCancelReachesTheAgent(t *testing.T) {
	const watches = 5
	cancels := make([]context.CancelFunc, 0, watches)
	for range watches {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		defer openWatch(t, ctx).Close()
	}
	waitFor(t, 10*time.Second, func() bool { return gauge(t, "agent", "tether_agent_requests_in_flight") >= watches })
	for _, cancel := range cancels {
		cancel()
	}
	waitFor(t, 10*time.Second, func() bool {
		return gauge(t, "agent", "tether_agent_requests_in_flight") == 0 &&
			gauge(t, "subscriber", "tether_subscriber_requests_in_flight") == 0 &&
			gauge(t, "router", "tether_router_requests_in_flight") == 0
	})
}
