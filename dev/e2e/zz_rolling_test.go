package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A planned restart of the subscriber holding the agent fails no request:
// the subscriber tells the agent to move (GoAway), the agent connects to
// the other subscriber first, then the old stream stops taking requests,
// finishes those in flight and closes. The agent is never without a stream.
func TestSubscriberRestartFailsNoRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	holder := ""
	for i := range env.stack.SubscriberURLs {
		name := "subscriber"
		if i > 0 {
			name = fmt.Sprintf("subscriber-%d", i)
		}
		if gauge(t, name, "tether_agent_streams") == 1 {
			holder = name
		}
	}
	if holder == "" {
		t.Fatal("no subscriber holds the agent's stream")
	}
	// Steady load through both gateways, and the agent's stream count
	// sampled all along.
	var ok, failed atomic.Int64
	var lowest atomic.Int64
	lowest.Store(1)
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	client := gatewayClient(t)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gw := env.stack.GatewayURLs[w%len(env.stack.GatewayURLs)]
			for {
				select {
				case <-stopLoad:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, gw+"/clusters/dev/api/v1/namespaces/default", nil)
				req.Header.Set("Authorization", "Bearer "+token("admin"))
				resp, err := client.Do(req)
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					if err == nil {
						t.Logf("failed: %d", resp.StatusCode)
					} else {
						t.Logf("failed: %v", err)
					}
				} else {
					ok.Add(1)
				}
				if resp != nil {
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopLoad:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if v, found := metric(t, "agent", "tether_agent_stream_connected"); found && int64(v) < lowest.Load() {
				lowest.Store(int64(v))
			}
		}
	}()
	time.Sleep(time.Second)
	if err := env.stack.Restart(ctx, holder); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	close(stopLoad)
	wg.Wait()
	t.Logf("%d requests succeeded, %d failed, during the restart of %s; fewest agent streams seen: %d", ok.Load(), failed.Load(), holder, lowest.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during a planned restart", failed.Load())
	}
	if lowest.Load() < 1 {
		t.Fatal("the agent was without a stream during the restart")
	}
	if gauge(t, holder, "tether_agent_streams") != 0 {
		t.Fatalf("the agent is back on %s: it should have moved", holder)
	}
	devStillServed(t)
}
