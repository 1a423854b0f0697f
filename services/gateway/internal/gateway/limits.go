package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/tether-dev/tether/lib/tunnel"
)

// Limits bound what one client, or one cluster's users together, can take
// from the gateway. Zero means no limit.
type Limits struct {
	// MaxHeaderBytes bounds the request head as the client sent it: 431.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body (kube-apiserver itself takes at
	// most 3 MiB for most requests): 413. Upgraded connections are streams,
	// not bodies, and are not bounded by it.
	MaxBodyBytes int64
	// InflightPerUser and InflightPerCluster bound requests in progress:
	// 429 with Retry-After. Long-running requests (watches, logs -f, exec,
	// attach, port-forward) have their own bounds, so a client holding
	// many watches cannot starve its short requests, nor the reverse.
	InflightPerUser, InflightPerCluster int
	LongPerUser, LongPerCluster         int
}

// longRunning reports whether a request stays open for as long as its
// client wants: an upgrade, a watch, or a followed log.
func longRunning(query url.Values, path string, upgrade bool) bool {
	return upgrade || tunnel.Streams(query, path)
}

// headBytes is the size of the request head as the client sent it: the
// request line and every header line.
func headBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	for name, values := range r.Header {
		for _, v := range values {
			n += len(name) + len(v) + 4
		}
	}
	return n
}

// counter counts what each key has in progress, up to max. Keys at zero
// are forgotten, so the map holds only keys with work in flight.
type counter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func newCounter(max int) *counter { return &counter{max: max, n: map[string]int{}} }

func (c *counter) acquire(key string) bool {
	if c.max <= 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] >= c.max {
		return false
	}
	c.n[key]++
	return true
}

func (c *counter) release(key string) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] <= 1 {
		delete(c.n, key)
		return
	}
	c.n[key]--
}

// admission holds the counters of one kind of request.
type admission struct {
	user, cluster *counter
}

// admit takes a place for user's request to cluster, or says which limit
// refused it; release gives the place back.
func (a admission) admit(user, cluster string) (release func(), refusal string) {
	if !a.user.acquire(user) {
		return nil, fmt.Sprintf("user %q has %d requests of this kind in progress, the most allowed", user, a.user.max)
	}
	if !a.cluster.acquire(cluster) {
		a.user.release(user)
		return nil, fmt.Sprintf("cluster %q has %d requests of this kind in progress, the most allowed", cluster, a.cluster.max)
	}
	return func() {
		a.cluster.release(cluster)
		a.user.release(user)
	}, ""
}
