package idp

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func newProvider(t *testing.T) (*Provider, *httptest.Server, *http.Client) {
	t.Helper()
	var p *Provider
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.Handler().ServeHTTP(w, r) }))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	var err error
	p, err = New(Config{Issuer: srv.URL, Clients: []string{"tether"}, KeyDir: t.TempDir(),
		Users: []User{{Name: "alice", Email: "alice@acme.example", Groups: []string{"acme:developers"}, Tenants: []string{"acme"}}}})
	if err != nil {
		t.Fatal(err)
	}
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return p, srv, client
}

const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-and-some-more"

func challenge(v string) string {
	s := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(s[:])
}

// authorize returns the code the provider redirects with, or the redirect
// URL's error.
func authorize(t *testing.T, srv *httptest.Server, client *http.Client, q url.Values) (code string, status int, location *url.URL) {
	t.Helper()
	resp, err := client.Get(srv.URL + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := resp.Location()
	if loc != nil {
		code = loc.Query().Get("code")
	}
	return code, resp.StatusCode, loc
}

func goodQuery() url.Values {
	return url.Values{"response_type": {"code"}, "client_id": {"tether"}, "redirect_uri": {"http://127.0.0.1:5555/callback"},
		"scope": {"openid email"}, "state": {"s1"}, "nonce": {"n1"}, "code_challenge": {challenge(verifier)},
		"code_challenge_method": {"S256"}, "login_hint": {"alice"}}
}

func exchange(t *testing.T, srv *httptest.Server, client *http.Client, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := client.PostForm(srv.URL+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestCodeFlowWithPKCE(t *testing.T) {
	p, srv, client := newProvider(t)
	code, status, loc := authorize(t, srv, client, goodQuery())
	if status != http.StatusFound || code == "" || loc.Query().Get("state") != "s1" {
		t.Fatalf("authorize: %d %v", status, loc)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "client_id": {"tether"}, "code": {code},
		"redirect_uri": {"http://127.0.0.1:5555/callback"}, "code_verifier": {"wrong-verifier-wrong-verifier-wrong-verifier"}}
	if st, _ := exchange(t, srv, client, form); st != http.StatusBadRequest {
		t.Fatalf("a wrong verifier: %d", st)
	}
	// The code was burnt by the failed attempt.
	form.Set("code_verifier", verifier)
	if st, _ := exchange(t, srv, client, form); st != http.StatusBadRequest {
		t.Fatalf("a code used twice: %d", st)
	}
	code, _, _ = authorize(t, srv, client, goodQuery())
	form.Set("code", code)
	st, tok := exchange(t, srv, client, form)
	if st != http.StatusOK {
		t.Fatalf("exchange: %d %v", st, tok)
	}
	claims := verify(t, srv, client, tok["id_token"].(string))
	if claims["iss"] != srv.URL || claims["aud"] != "tether" || claims["email"] != "alice@acme.example" || claims["nonce"] != "n1" {
		t.Fatalf("claims %v", claims)
	}
	// Refresh tokens rotate: each works once.
	rt := tok["refresh_token"].(string)
	refresh := url.Values{"grant_type": {"refresh_token"}, "client_id": {"tether"}, "refresh_token": {rt}}
	if st, _ := exchange(t, srv, client, refresh); st != http.StatusOK {
		t.Fatalf("refresh: %d", st)
	}
	if st, _ := exchange(t, srv, client, refresh); st != http.StatusBadRequest {
		t.Fatalf("a used refresh token: %d", st)
	}
	// After a rotation the old key still verifies what it signed.
	if err := p.Rotate(); err != nil {
		t.Fatal(err)
	}
	verify(t, srv, client, tok["id_token"].(string))
}

func TestAuthorizeRefuses(t *testing.T) {
	_, srv, client := newProvider(t)
	tests := []struct {
		name   string
		edit   func(url.Values)
		status int
	}{
		{"a redirect off this machine", func(q url.Values) { q.Set("redirect_uri", "http://evil.example/cb") }, http.StatusBadRequest},
		{"https redirect", func(q url.Values) { q.Set("redirect_uri", "https://127.0.0.1:1/cb") }, http.StatusBadRequest},
		{"unknown client", func(q url.Values) { q.Set("client_id", "other") }, http.StatusBadRequest},
		{"no PKCE", func(q url.Values) { q.Del("code_challenge") }, http.StatusFound},
		{"plain PKCE", func(q url.Values) { q.Set("code_challenge_method", "plain") }, http.StatusFound},
		{"no openid scope", func(q url.Values) { q.Set("scope", "email") }, http.StatusFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := goodQuery()
			tt.edit(q)
			code, status, loc := authorize(t, srv, client, q)
			if status != tt.status || code != "" {
				t.Fatalf("status %d code %q", status, code)
			}
			if status == http.StatusFound && loc.Query().Get("error") == "" {
				t.Fatalf("redirected without an error: %v", loc)
			}
		})
	}
	// Without a known hint: a page to pick a user, no code.
	q := goodQuery()
	q.Set("login_hint", "mallory")
	resp, err := client.Get(srv.URL + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("unknown hint: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func verify(t *testing.T, srv *httptest.Server, client *http.Client, token string) map[string]any {
	t.Helper()
	resp, err := client.Get(srv.URL + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) != 1 {
		t.Fatalf("key %q not in the key set", jws.Signatures[0].Header.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	_ = json.Unmarshal(payload, &claims)
	return claims
}
