package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// testIssuer is an OpenID provider reduced to what verification needs:
// discovery and a key set it can change.
type testIssuer struct {
	srv       *httptest.Server
	mu        sync.Mutex
	keys      []jose.JSONWebKey // public, published
	jwksHits  atomic.Int64
	down      atomic.Bool
	signerKey *rsa.PrivateKey
	kid       string
}

func newTestIssuer(t *testing.T) *testIssuer {
	ti := &testIssuer{}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if ti.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": ti.srv.URL, "jwks_uri": ti.srv.URL + "/jwks",
			"authorization_endpoint": ti.srv.URL + "/authorize", "token_endpoint": ti.srv.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwksHits.Add(1)
		ti.mu.Lock()
		defer ti.mu.Unlock()
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: ti.keys})
	})
	ti.srv = httptest.NewTLSServer(mux)
	t.Cleanup(ti.srv.Close)
	ti.rotate(t)
	return ti
}

// rotate makes a new key the signer and publishes it beside the old ones.
func (ti *testIssuer) rotate(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ti.mu.Lock()
	defer ti.mu.Unlock()
	ti.signerKey, ti.kid = key, "k"+string(rune('0'+len(ti.keys)))
	ti.keys = append(ti.keys, jose.JSONWebKey{Key: key.Public(), KeyID: ti.kid, Algorithm: "RS256", Use: "sig"})
}

func (ti *testIssuer) caFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ti.srv.Certificate().Raw})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// claims are a valid token's claims for alice, changed by edit.
func (ti *testIssuer) claims(edit func(map[string]any)) map[string]any {
	c := map[string]any{
		"iss": ti.srv.URL, "aud": "tether", "sub": "u-alice", "email": "alice@acme.example",
		"groups": []string{"acme:developers"}, "tenants": []string{"acme"},
		"iat": time.Now().Unix(), "exp": time.Now().Add(5 * time.Minute).Unix(),
	}
	if edit != nil {
		edit(c)
	}
	return c
}

func sign(t *testing.T, alg jose.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (ti *testIssuer) token(t *testing.T, edit func(map[string]any)) string {
	ti.mu.Lock()
	key, kid := ti.signerKey, ti.kid
	ti.mu.Unlock()
	return sign(t, jose.RS256, key, kid, ti.claims(edit))
}

func newTestOIDC(t *testing.T, ti *testIssuer) *OIDC {
	o, err := NewOIDC(OIDCConfig{
		IssuerURL: ti.srv.URL, ClientID: "tether", CAFile: ti.caFile(t),
		Claims:     Claims{User: "email", Groups: "groups", Tenants: "tenants"},
		KeyRefresh: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOIDCRefusesForgedTokens(t *testing.T) {
	ti := newTestIssuer(t)
	o := newTestOIDC(t, ti)
	ctx := context.Background()
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	unsigned := func(claims map[string]any) string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		p, _ := json.Marshal(claims)
		return h + "." + base64.RawURLEncoding.EncodeToString(p) + "."
	}
	// HS256 keyed with the issuer's public key: the classic confusion.
	pubDER := ti.srv.Certificate().Raw
	tests := []struct {
		name  string
		token string
	}{
		{"signed with another key under the issuer's kid", sign(t, jose.RS256, otherKey, ti.kid, ti.claims(nil))},
		{"signed with another key, no kid", sign(t, jose.RS256, otherKey, "", ti.claims(nil))},
		{"alg none", unsigned(ti.claims(nil))},
		{"HMAC with public bytes", sign(t, jose.HS256, pubDER, ti.kid, ti.claims(nil))},
		{"ES256 by a key nobody published", sign(t, jose.ES256, ecKey, "", ti.claims(nil))},
		{"expired", ti.token(t, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() })},
		{"another audience", ti.token(t, func(c map[string]any) { c["aud"] = "someone-else" })},
		{"another issuer", ti.token(t, func(c map[string]any) { c["iss"] = "https://evil.example" })},
		{"system:masters claimed", ti.token(t, func(c map[string]any) { c["groups"] = []string{"system:masters"} })},
		{"tenant wildcard claimed", ti.token(t, func(c map[string]any) { c["tenants"] = []string{">"} })},
		{"garbage with two dots", "a.b.c"},
		{"not a JWT", "just-a-token"},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := o.Authenticate(ctx, tt.token)
			if !errors.Is(err, ErrUnknown) {
				t.Fatalf("Authenticate = %+v, %v; want ErrUnknown", u, err)
			}
		})
	}
	u, err := o.Authenticate(ctx, ti.token(t, nil))
	if err != nil || u.Name != "alice@acme.example" || u.UID != "u-alice" || strings.Join(u.Tenants, ",") != "acme" {
		t.Fatalf("a valid token: %+v, %v", u, err)
	}
}

func TestOIDCFollowsKeyRotationWithoutRestart(t *testing.T) {
	ti := newTestIssuer(t)
	o := newTestOIDC(t, ti)
	o.cfg.KeyRefresh = 0
	ctx := context.Background()
	before := ti.token(t, nil)
	if _, err := o.Authenticate(ctx, before); err != nil {
		t.Fatal(err)
	}
	ti.rotate(t)
	after := ti.token(t, nil)
	for name, tok := range map[string]string{"new key": after, "old key, still published": before} {
		if _, err := o.Authenticate(ctx, tok); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestOIDCUnknownKeysDoNotHammerTheIssuer(t *testing.T) {
	ti := newTestIssuer(t)
	o := newTestOIDC(t, ti) // KeyRefresh: an hour
	ctx := context.Background()
	if _, err := o.Authenticate(ctx, ti.token(t, nil)); err != nil {
		t.Fatal(err)
	}
	hits := ti.jwksHits.Load()
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for i := range 200 {
		tok := sign(t, jose.RS256, otherKey, "forged-"+string(rune('a'+i%26)), ti.claims(nil))
		if _, err := o.Authenticate(ctx, tok); !errors.Is(err, ErrUnknown) {
			t.Fatalf("forged kid: %v", err)
		}
	}
	if got := ti.jwksHits.Load() - hits; got > 1 {
		t.Fatalf("200 tokens with unknown key ids fetched the key set %d times; want at most 1", got)
	}
}

func TestOIDCStartsWithoutItsIssuer(t *testing.T) {
	ti := newTestIssuer(t)
	ti.down.Store(true)
	o := newTestOIDC(t, ti)
	ctx := context.Background()
	if err := o.Ready(ctx); err == nil {
		t.Fatal("ready while the issuer is down")
	}
	if _, err := o.Authenticate(ctx, ti.token(t, nil)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("with the issuer down: %v; want ErrUnavailable", err)
	}
	if _, err := o.Authenticate(ctx, "static-token"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("a non-JWT with the issuer down: %v; want ErrUnknown", err)
	}
	ti.down.Store(false)
	if err := o.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Authenticate(ctx, ti.token(t, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestNewOIDCValidates(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ok := Claims{User: "sub", Tenants: "tenants"}
	tests := []struct {
		name string
		cfg  OIDCConfig
	}{
		{"http issuer", OIDCConfig{IssuerURL: "http://x", ClientID: "c", Claims: ok, Logger: log}},
		{"no client", OIDCConfig{IssuerURL: "https://x", Claims: ok, Logger: log}},
		{"alg none", OIDCConfig{IssuerURL: "https://x", ClientID: "c", SigningAlgs: []string{"none"}, Claims: ok, Logger: log}},
		{"HMAC", OIDCConfig{IssuerURL: "https://x", ClientID: "c", SigningAlgs: []string{"HS256"}, Claims: ok, Logger: log}},
		{"no tenants claim", OIDCConfig{IssuerURL: "https://x", ClientID: "c", Claims: Claims{User: "sub"}, Logger: log}},
		{"no logger", OIDCConfig{IssuerURL: "https://x", ClientID: "c", Claims: ok}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewOIDC(tt.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestChain(t *testing.T) {
	ctx := context.Background()
	tokens := &Tokens{users: map[[32]byte]User{}}
	ti := newTestIssuer(t)
	ti.down.Store(true)
	o := newTestOIDC(t, ti)
	c := Chain{tokens, o}
	if _, err := c.Authenticate(ctx, "x"); !errors.Is(err, ErrUnknown) {
		t.Fatalf("unknown static token: %v", err)
	}
	if _, err := c.Authenticate(ctx, ti.token(t, nil)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("ID token while the issuer is down: %v", err)
	}
}
