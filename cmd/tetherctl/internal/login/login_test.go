package login

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// provider is an OpenID provider reduced to what login does: discovery,
// authorize (straight back to the redirect with a code), and tokens with
// PKCE and rotating refresh tokens. Its ID tokens are unsigned: login does
// not check signatures, the gateway does.
type provider struct {
	srv      *httptest.Server
	requests atomic.Int64
	ttl      time.Duration
	issuer   string // what discovery claims; the server's URL unless set

	mu          sync.Mutex
	challenge   string
	nonce       string
	refresh     map[string]bool
	failRefresh bool
}

func newProvider(t *testing.T) *provider {
	p := &provider{ttl: time.Hour, refresh: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		iss := p.issuer
		if iss == "" {
			iss = p.srv.URL
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "authorization_endpoint": p.srv.URL + "/authorize", "token_endpoint": p.srv.URL + "/token"})
	})
	mux.HandleFunc("/authorize", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		p.mu.Lock()
		p.challenge, p.nonce = q.Get("code_challenge"), q.Get("nonce")
		p.mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code=c1&state="+q.Get("state"), http.StatusFound)
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		p.mu.Lock()
		defer p.mu.Unlock()
		switch r.PostForm.Get("grant_type") {
		case "authorization_code":
			sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
			if base64.RawURLEncoding.EncodeToString(sum[:]) != p.challenge {
				http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
				return
			}
		case "refresh_token":
			if p.failRefresh || !p.refresh[r.PostForm.Get("refresh_token")] {
				http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
				return
			}
			delete(p.refresh, r.PostForm.Get("refresh_token"))
			p.nonce = ""
		}
		rt := fmt.Sprintf("rt-%d", len(p.refresh)+int(p.requests.Load()))
		p.refresh[rt] = true
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "a", "token_type": "Bearer", "refresh_token": rt,
			"id_token": jwt(map[string]any{"exp": time.Now().Add(p.ttl).Unix(), "nonce": p.nonce, "sub": "u"})})
	})
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func jwt(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`)) + "." + base64.RawURLEncoding.EncodeToString(b) + ".sig"
}

// browser follows the authorization URL to the loopback redirect, as a
// person's browser would.
func browser(ctx context.Context, url string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("callback answered %s", resp.Status)
	}
	return nil
}

func options(p *provider, dir string) Options {
	return Options{Issuer: p.srv.URL, ClientID: "tether", CacheDir: dir, Browser: browser, Timeout: 10 * time.Second}
}

func TestTokenCachesAndRefreshes(t *testing.T) {
	ctx := context.Background()
	p := newProvider(t)
	dir := t.TempDir()
	first, err := Token(ctx, options(p, dir))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 1 {
		t.Fatalf("cache files %v", files)
	}
	if fi, _ := os.Stat(files[0]); fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v", fi.Mode())
	}
	// From the cache: no request at all.
	n := p.requests.Load()
	again, err := Token(ctx, options(p, dir))
	if err != nil || again.Token != first.Token || p.requests.Load() != n {
		t.Fatalf("second call: %v, %d requests", err, p.requests.Load()-n)
	}
	// Expired: the refresh token, no browser.
	expire(t, files[0])
	o := options(p, dir)
	o.Browser = func(context.Context, string) error { t.Error("the browser opened for a refresh"); return nil }
	refreshed, err := Token(ctx, o)
	if err != nil || refreshed.Token == first.Token {
		t.Fatalf("refresh: %v", err)
	}
	// The refresh token rotated; when refreshing fails, log in again.
	expire(t, files[0])
	p.mu.Lock()
	p.failRefresh = true
	p.mu.Unlock()
	if _, err := Token(ctx, options(p, dir)); err != nil {
		t.Fatalf("falling back to a login: %v", err)
	}
}

func expire(t *testing.T, path string) {
	t.Helper()
	c, err := readCache(path)
	if err != nil {
		t.Fatal(err)
	}
	c.Expiry = time.Now().Add(-time.Minute)
	if err := writeCache(path, c); err != nil {
		t.Fatal(err)
	}
}

func TestTokenRefuses(t *testing.T) {
	ctx := context.Background()
	t.Run("an issuer that calls itself something else", func(t *testing.T) {
		p := newProvider(t)
		p.issuer = "https://evil.example"
		if _, err := Token(ctx, options(p, t.TempDir())); err == nil || !strings.Contains(err.Error(), "calls itself") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a redirect with another state", func(t *testing.T) {
		p := newProvider(t)
		o := options(p, t.TempDir())
		o.Browser = func(ctx context.Context, url string) error {
			i := strings.Index(url, "redirect_uri=")
			redirect := url[i+len("redirect_uri="):]
			redirect = redirect[:strings.Index(redirect, "&")]
			redirect = strings.NewReplacer("%3A", ":", "%2F", "/").Replace(redirect)
			return browser(ctx, redirect+"?code=c1&state=forged")
		}
		if _, err := Token(ctx, o); err == nil || !strings.Contains(err.Error(), "state") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("nobody logs in", func(t *testing.T) {
		p := newProvider(t)
		o := options(p, t.TempDir())
		o.Browser, o.Timeout = nil, 200*time.Millisecond
		if _, err := Token(ctx, o); err == nil || !strings.Contains(err.Error(), "no login") {
			t.Fatalf("err = %v", err)
		}
	})
}
