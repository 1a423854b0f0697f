package gateway

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"

	"github.com/tether-dev/tether/lib/tunnel"
)

// Limits bound what one client, or one cluster's users together, can take
// from the gateway. Zero means no limit, except for MaxHeaderBytes, which is required.
type Limits struct {
	// MaxHeaderBytes bounds the request head as the client sent it, at
	// most tunnel.MaxHead: 431. Beside it, a head may have at most
	// tunnel.MaxHeaders fields, each of at most tunnel.MaxHeaderValue
	// bytes (credentials aside, which are never carried on): 431 too.
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

// headTooLarge says how r's head exceeds what the gateway takes, or ""
// when it does not: too many fields, a field too long, or too many bytes in
// all. Each is a 431, checked before anything reads the head, so the
// envelope's own bounds (tunnel.MaxHeaders, tunnel.MaxHeaderValue) are
// never what refuses a client's head.
func (l Limits) headTooLarge(r *http.Request) string {
	fields := 0
	size := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	for name, values := range r.Header {
		// Credentials are dropped before the envelope, so only the whole
		// head bounds them: an ID token with hundreds of groups is long.
		carried := !tunnel.Credential(textproto.CanonicalMIMEHeaderKey(name)) && !strings.EqualFold(name, "Sec-Websocket-Protocol")
		if len(name) > tunnel.MaxHeaderValue {
			return fmt.Sprintf("a header name of %d bytes exceeds %d", len(name), tunnel.MaxHeaderValue)
		}
		for _, v := range values {
			fields++
			if carried && len(v) > tunnel.MaxHeaderValue {
				return fmt.Sprintf("a value of header %.64q of %d bytes exceeds %d", name, len(v), tunnel.MaxHeaderValue)
			}
			size += len(name) + len(v) + 4
		}
	}
	if fields > tunnel.MaxHeaders {
		return fmt.Sprintf("%d header fields exceed %d", fields, tunnel.MaxHeaders)
	}
	if l.MaxHeaderBytes > 0 && size > l.MaxHeaderBytes {
		return fmt.Sprintf("the request head of %d bytes exceeds %d", size, l.MaxHeaderBytes)
	}
	return ""
}

// ServerHeadBytes is the http.Server's MaxHeaderBytes for these limits:
// where the server stops reading a head and answers a bare 431 itself,
// far enough beyond MaxHeaderBytes that the gateway answers the heads it
// refuses with a Status. HTTP/2 counts 32 bytes more per field than the
// field takes on the wire; room for 16,384 of them keeps a head of many
// small fields (10,000 one-letter headers) below the cut-off.
func (l Limits) ServerHeadBytes() int {
	if l.MaxHeaderBytes <= 0 {
		return 0 // net/http's default, 1 MiB
	}
	return 2*l.MaxHeaderBytes + 32*16384
}

// validate refuses limits an envelope could not carry.
func (l Limits) validate() error {
	if l.MaxHeaderBytes <= 0 || l.MaxHeaderBytes > tunnel.MaxHead {
		return fmt.Errorf("the head limit of %d bytes must be positive and at most %d (what an envelope carries)", l.MaxHeaderBytes, tunnel.MaxHead)
	}
	return nil
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
