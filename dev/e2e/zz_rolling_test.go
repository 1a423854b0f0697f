package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
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
	holder := agentHolder(t)
	l := startLoad(t)
	time.Sleep(time.Second)
	if err := env.stack.Restart(ctx, holder); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	ok, failed, lowest := l.stop()
	t.Logf("%d requests succeeded, %d failed, during the restart of %s; fewest agent streams seen: %d", ok, failed, holder, lowest)
	if failed != 0 {
		t.Fatalf("%d requests failed during a planned restart", failed)
	}
	if lowest < 1 {
		t.Fatal("the agent was without a stream during the restart")
	}
	if gauge(t, holder, "tether_agent_streams") != 0 {
		t.Fatalf("the agent is back on %s: it should have moved", holder)
	}
	devStillServed(t)
}

// A subscriber that dies (SIGKILL) loses the requests it held; the reads
// among them go out again once the agent has reconnected to the other
// subscriber, within the router's --read-retry, and no read fails.
func TestReadsSurviveASubscriberCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	holder := agentHolder(t)
	retries, _ := metric(t, "router", "tether_router_retries_total")
	l := startLoad(t)
	time.Sleep(time.Second)
	if err := env.stack.Process(holder).Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Until the routers' idle probe (2 s here) finds the subscriber gone
	// and the reads go out again.
	time.Sleep(4 * time.Second)
	ok, failed, _ := l.stop()
	after, _ := metric(t, "router", "tether_router_retries_total")
	t.Logf("%d reads succeeded, %d failed, across the crash of %s; router-0 sent %v again", ok, failed, holder, after-retries)
	if failed != 0 {
		t.Fatalf("%d reads failed across a subscriber crash", failed)
	}
	if err := env.stack.Restart(ctx, holder); err != nil {
		t.Fatal(err)
	}
	devStillServed(t)
}

// agentHolder is the subscriber that holds the agent's stream.
func agentHolder(t *testing.T) string {
	t.Helper()
	for i := range env.stack.SubscriberURLs {
		name := "subscriber"
		if i > 0 {
			name = fmt.Sprintf("subscriber-%d", i)
		}
		if gauge(t, name, "tether_agent_streams") == 1 {
			return name
		}
	}
	t.Fatal("no subscriber holds the agent's stream")
	return ""
}

// load is 8 clients reading through every gateway, and the agent's stream
// count sampled all along.
type load struct {
	ok, failed, lowest atomic.Int64
	done               chan struct{}
	wg                 sync.WaitGroup
}

func (l *load) stop() (ok, failed, lowest int64) {
	close(l.done)
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.lowest.Load()
}

func startLoad(t *testing.T) *load {
	l := &load{done: make(chan struct{})}
	l.lowest.Store(1)
	ok, failed, lowest, stopLoad, wg := &l.ok, &l.failed, &l.lowest, l.done, &l.wg
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
	return l
}
