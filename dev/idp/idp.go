// Package idp is a small OpenID Connect provider for the development stack
// and tests: discovery, a key set, the authorization code flow with PKCE
// for loopback redirects (RFC 8252), and refresh tokens.
//
// It is a development tool and nothing more. It has no passwords: an
// authorization request whose login_hint names one of its users is
// approved at once, and without a hint it shows a page where anyone may
// pick any user. Never run it where real clusters are reachable.
package idp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// User is someone the provider can log in.
type User struct {
	Name    string   `json:"name"`
	Email   string   `json:"email"`
	Groups  []string `json:"groups"`
	Tenants []string `json:"tenants"`
}

// Config configures a Provider.
type Config struct {
	// Issuer is the provider's https URL, exactly as tokens carry it.
	Issuer  string
	Users   []User
	Clients []string
	// TokenTTL is the ID tokens' lifetime; default 10 minutes.
	TokenTTL time.Duration
	// KeyDir keeps the signing keys across restarts.
	KeyDir string
}

// Provider is the OpenID provider; its Handler serves it.
type Provider struct {
	cfg   Config
	users map[string]User

	mu      sync.Mutex
	keys    []*rsa.PrivateKey // newest last; the last signs
	codes   map[string]grant  // authorization codes, single use
	refresh map[string]string // refresh token → user, single use
}

type grant struct {
	user, client, redirect, challenge, nonce string
	expires                                  time.Time
}

// New validates cfg and loads (or creates) the signing key.
func New(cfg Config) (*Provider, error) {
	if !strings.HasPrefix(cfg.Issuer, "https://") || strings.HasSuffix(cfg.Issuer, "/") {
		return nil, fmt.Errorf("idp: issuer %q must be an https URL without a trailing slash", cfg.Issuer)
	}
	if len(cfg.Users) == 0 || len(cfg.Clients) == 0 || cfg.KeyDir == "" {
		return nil, errors.New("idp: users, clients and a key folder are required")
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 10 * time.Minute
	}
	p := &Provider{cfg: cfg, users: map[string]User{}, codes: map[string]grant{}, refresh: map[string]string{}}
	for _, u := range cfg.Users {
		if u.Name == "" {
			return nil, errors.New("idp: a user without a name")
		}
		p.users[u.Name] = u
	}
	if err := p.loadKeys(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Provider) keyPath(i int) string {
	return filepath.Join(p.cfg.KeyDir, fmt.Sprintf("signing-%d.key", i))
}

func (p *Provider) loadKeys() error {
	if err := os.MkdirAll(p.cfg.KeyDir, 0o700); err != nil {
		return fmt.Errorf("idp: %w", err)
	}
	for i := 0; ; i++ {
		b, err := os.ReadFile(p.keyPath(i))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("idp: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return fmt.Errorf("idp: no PEM in %s", p.keyPath(i))
		}
		k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err != nil {
			return fmt.Errorf("idp: %s: %w", p.keyPath(i), err)
		}
		p.keys = append(p.keys, k)
	}
	if len(p.keys) == 0 {
		return p.Rotate()
	}
	return nil
}

// Rotate makes a new key the signer. The older keys stay in the key set,
// so tokens they signed keep verifying until they expire.
func (p *Provider) Rotate() error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("idp: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	path := p.keyPath(len(p.keys))
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
		return fmt.Errorf("idp: %w", err)
	}
	p.keys = append(p.keys, k)
	return nil
}

func kid(k *rsa.PrivateKey) string {
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:8])
}

// Sign signs claims with the current key, as an ID token. Tests use it to
// make tokens the flow would not (expired, for another audience).
func (p *Provider) Sign(claims map[string]any) (string, error) {
	p.mu.Lock()
	k := p.keys[len(p.keys)-1]
	p.mu.Unlock()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: k}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid(k)))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Claims are the claims of a fresh ID token for user.
func (p *Provider) Claims(user, client, nonce string) (map[string]any, error) {
	u, ok := p.users[user]
	if !ok {
		return nil, fmt.Errorf("idp: no user %q", user)
	}
	now := time.Now()
	c := map[string]any{
		"iss": p.cfg.Issuer, "sub": "user-" + u.Name, "aud": client,
		"iat": now.Unix(), "exp": now.Add(p.cfg.TokenTTL).Unix(),
		"name": u.Name, "email": u.Email, "email_verified": true,
		"groups": nonNil(u.Groups), "tenants": nonNil(u.Tenants),
	}
	if nonce != "" {
		c["nonce"] = nonce
	}
	return c, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Handler serves discovery, keys, authorization and tokens.
func (p *Provider) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /jwks", p.jwks)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	iss := p.cfg.Issuer
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer": iss, "authorization_endpoint": iss + "/authorize", "token_endpoint": iss + "/token", "jwks_uri": iss + "/jwks",
		"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"}, "code_challenge_methods_supported": []string{"S256"},
		"grant_types_supported": []string{"authorization_code", "refresh_token"},
		"scopes_supported":      []string{"openid", "email", "profile", "groups", "offline_access"},
	})
}

func (p *Provider) jwks(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	set := jose.JSONWebKeySet{}
	for _, k := range p.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid(k), Algorithm: "RS256", Use: "sig"})
	}
	p.mu.Unlock()
	writeJSON(w, http.StatusOK, set)
}

func (p *Provider) knownClient(id string) bool {
	for _, c := range p.cfg.Clients {
		if c == id {
			return true
		}
	}
	return false
}

// loopback: native apps get codes only on this machine (RFC 8252 7.3).
func loopback(redirect string) bool {
	u, err := url.Parse(redirect)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Fragment != "" {
		return false
	}
	h := u.Hostname()
	return h == "127.0.0.1" || h == "localhost" || h == "::1"
}

var pickPage = template.Must(template.New("pick").Parse(`<!doctype html><title>Tether development login</title>
<h1>Tether development identity provider</h1><p>Development only: no passwords. Log in as:</p><ul>
{{range .Users}}<li><a href="{{$.Base}}&login_hint={{.Name}}">{{.Name}}</a> (tenants {{.Tenants}})</li>{{end}}</ul>`))

func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	client, redirect := q.Get("client_id"), q.Get("redirect_uri")
	if !p.knownClient(client) || !loopback(redirect) {
		// Never redirect to a URI that is not known good.
		http.Error(w, "unknown client_id or a redirect_uri that is not a loopback http URL", http.StatusBadRequest)
		return
	}
	fail := func(code, desc string) {
		u, _ := url.Parse(redirect)
		v := u.Query()
		v.Set("error", code)
		v.Set("error_description", desc)
		v.Set("state", q.Get("state"))
		u.RawQuery = v.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	switch {
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", "only code")
		return
	case !strings.Contains(" "+q.Get("scope")+" ", " openid "):
		fail("invalid_scope", "openid is required")
		return
	case q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) < 43:
		fail("invalid_request", "PKCE with S256 is required")
		return
	}
	hint := q.Get("login_hint")
	if _, ok := p.users[hint]; !ok {
		base := *r.URL
		v := base.Query()
		v.Del("login_hint")
		base.RawQuery = v.Encode()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = pickPage.Execute(w, map[string]any{"Users": p.cfg.Users, "Base": base.String()})
		return
	}
	code := random()
	p.mu.Lock()
	p.codes[code] = grant{user: hint, client: client, redirect: redirect, challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), expires: time.Now().Add(time.Minute)}
	p.mu.Unlock()
	u, _ := url.Parse(redirect)
	v := u.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	client := r.PostForm.Get("client_id")
	if !p.knownClient(client) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	bad := func(desc string) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": desc})
	}
	var user, nonce string
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		p.mu.Lock()
		g, ok := p.codes[r.PostForm.Get("code")]
		delete(p.codes, r.PostForm.Get("code")) // single use, even when refused
		p.mu.Unlock()
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		switch {
		case !ok || time.Now().After(g.expires):
			bad("unknown, used or expired code")
			return
		case g.client != client || g.redirect != r.PostForm.Get("redirect_uri"):
			bad("code issued to another client or redirect_uri")
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
			bad("code_verifier does not match the challenge")
			return
		}
		user, nonce = g.user, g.nonce
	case "refresh_token":
		p.mu.Lock()
		u, ok := p.refresh[r.PostForm.Get("refresh_token")]
		delete(p.refresh, r.PostForm.Get("refresh_token")) // rotated on use
		p.mu.Unlock()
		if !ok {
			bad("unknown or used refresh token")
			return
		}
		user = u
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	claims, err := p.Claims(user, client, nonce)
	if err != nil {
		bad(err.Error())
		return
	}
	idt, err := p.Sign(claims)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		return
	}
	rt := random()
	p.mu.Lock()
	p.refresh[rt] = user
	p.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": idt, "id_token": idt, "token_type": "Bearer",
		"expires_in": int(p.cfg.TokenTTL.Seconds()), "refresh_token": rt,
	})
}

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
