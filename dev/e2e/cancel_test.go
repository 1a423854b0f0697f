package e2e

import (
	"context"
	"testing"
	"time"
)

// gauge reads one gauge or counter series, such as name or
// name{label="v"}, from a service's /metrics; the test fails without it.
func gauge(t *testing.T, service, series string) float64 {
	t.Helper()
	v, ok := metric(t, service, series)
	if !ok {
		t.Fatalf("%s has no %s", service, series)
	}
	return v
}

// metric reads one series from a service's /metrics, if it is there.
func metric(t *testing.T, service, series string) (float64, bool) {
	t.Helper()
	return env.stack.Metric(service, series)
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
