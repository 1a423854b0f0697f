package gateway

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tether-dev/tether/lib/assertion"
	"github.com/tether-dev/tether/lib/assertion/assertiontest"
	"github.com/tether-dev/tether/services/gateway/internal/identity"
)

// testIdentityKeys is a gateway signing key under a new identity root, and
// the verifier an agent installed with that root would use.
func testIdentityKeys(t *testing.T) (*assertion.Signer, *assertion.Verifier) {
	return assertiontest.Keys(t)
}

// What the gateway signs is what the agent of that cluster accepts for
// that request, for as long as the request may need it, and no longer.
func TestSignBindsTheRequest(t *testing.T) {
	g := newTestGateway(t)
	var v *assertion.Verifier
	g.cfg.Identities, v = testIdentityKeys(t)
	user := identity.User{Name: "alice", UID: "u1", Groups: []string{"acme:developers"}, Tenants: []string{"acme"},
		Extra: map[string][]string{"scopes": {"a", "b"}}}
	now := time.Now()
	for _, tc := range []struct {
		target string
		ttl    time.Duration
	}{
		{"/clusters/dev/api/v1/pods?limit=5", identityTTL},
		{"/clusters/dev/api/v1/pods?watch=true&timeoutSeconds=300", 300*time.Second + identityTTL},
		{"/clusters/dev/api/v1/pods?watch=1", maxWatchTTL},
		{"/clusters/dev/api/v1/pods?watch=true&timeoutSeconds=86400", maxWatchTTL},
	} {
		r := httptest.NewRequest("GET", tc.target, nil)
		cluster, rest, err := ParsePath(r.URL.EscapedPath())
		if err != nil {
			t.Fatal(err)
		}
		open := newOpen(r, "req-1", cluster, rest, user, true)
		si, err := g.sign(open, user, nil, now, 0)
		if err != nil {
			t.Fatal(err)
		}
		open.SignedIdentity = si
		a, err := v.Verify(si, now)
		if err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if err := assertion.Bind(a, open, "dev"); err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		if a.GetIdentity().GetUser() != "alice" || a.GetIdentity().GetExtra()["scopes"].GetValues()[1] != "b" || a.GetTenants()[0] != "acme" {
			t.Fatalf("%s: signed %v", tc.target, a)
		}
		if got := time.UnixMilli(a.GetExpiresUnixMilli()).Sub(time.UnixMilli(a.GetIssuedUnixMilli())); got != tc.ttl {
			t.Errorf("%s: good for %v, want %v", tc.target, got, tc.ttl)
		}
		if _, err := v.Verify(si, now.Add(tc.ttl)); err == nil {
			t.Errorf("%s: still good after %v", tc.target, tc.ttl)
		}
	}
}

func TestAgentKeys(t *testing.T) {
	var k agentKeys
	key := bytes.Repeat([]byte{7}, 32)
	k.learn("dev", key)
	k.learn("other", []byte("short"))
	key[0] = 9 // the caller's buffer may change: the gateway keeps a copy
	if got := k.get("dev"); len(got) != 32 || got[0] != 7 {
		t.Fatalf("dev: %x", got)
	}
	if got := k.get("other"); got != nil {
		t.Fatalf("a key that is no X25519 key was kept: %x", got)
	}
	for i := range maxAgentKeys + 1 {
		k.learn(fmt.Sprintf("c%d", i), key)
	}
	if n := len(k.keys); n > maxAgentKeys {
		t.Fatalf("%d clusters remembered, more than %d", n, maxAgentKeys)
	}
}
