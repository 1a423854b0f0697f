package gateway

import (
	"bytes"
	"net/url"
	"strconv"
	"sync"
	"time"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/services/gateway/internal/identity"
)

// How long a signed identity is good for. A request is signed as it
// leaves the gateway and checked as it reaches the agent, and the router
// tries it again only within seconds, so a minute covers every try. A
// watch resumed after a lost hop needs its signature for as long as the
// watch may last: its own timeoutSeconds, or what the kube-apiserver
// allows a watch at most (2 × --min-request-timeout, 60 min by default).
const (
	identityTTL = time.Minute
	maxWatchTTL = 65 * time.Minute
)

// sign signs user's identity for open, which the gateway built and the
// router may only send again or resume, with whom user asked to act as,
// if anyone; handoff counts the routers it was handed to before.
func (g *Gateway) sign(open *tetherv1.Open, user identity.User, asked *tetherv1.Identity, now time.Time, handoff uint32) (*tetherv1.SignedIdentity, error) {
	return g.cfg.Identities.SignFor(&tetherv1.IdentityAssertion{
		Identity:         &tetherv1.Identity{User: user.Name, Uid: user.UID, Groups: user.Groups, Extra: extra(user.Extra)},
		Tenants:          user.Tenants,
		ClusterId:        open.ClusterId,
		RequestId:        open.RequestId,
		Method:           open.Method,
		Path:             open.Path,
		Query:            open.Query,
		IssuedUnixMilli:  now.UnixMilli(),
		ExpiresUnixMilli: now.Add(signedFor(open.Query)).UnixMilli(),
		Issuer:           g.cfg.Issuer,
		Impersonate:      asked,
		Handoff:          handoff,
	}, g.agentKeys.get(open.ClusterId))
}

// agentKeys remember the X25519 key each cluster's agent last announced
// (Response.agent_key), so the next signed identities carry a MAC that
// agent checks instead of the signature. A key changed on the way costs
// only that: the agent checks the signature.
type agentKeys struct {
	// Read on every request and checked on every response; written only
	// when an agent's key changes.
	mu   sync.RWMutex
	keys map[string][]byte
}

// maxAgentKeys bounds the clusters remembered: a 10,000-cluster fleet
// fits; past it, the map starts over.
const maxAgentKeys = 10000

func (k *agentKeys) get(cluster string) []byte {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.keys[cluster]
}

// learn remembers key for cluster, which answered a request that this
// gateway authorized for the user (so no id the user may not see).
func (k *agentKeys) learn(cluster string, key []byte) {
	if len(key) != 32 || bytes.Equal(k.get(cluster), key) {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil || len(k.keys) >= maxAgentKeys {
		k.keys = map[string][]byte{}
	}
	k.keys[cluster] = bytes.Clone(key)
}

// signedFor is how long the identity of a request with query stays good.
func signedFor(query string) time.Duration {
	q, err := url.ParseQuery(query)
	if w := q.Get("watch"); err != nil || (w != "true" && w != "1") {
		return identityTTL
	}
	if n, err := strconv.ParseInt(q.Get("timeoutSeconds"), 10, 64); err == nil && n > 0 && time.Duration(n)*time.Second < maxWatchTTL {
		return time.Duration(n)*time.Second + identityTTL
	}
	return maxWatchTTL
}
