// Package login gets an OpenID Connect ID token for kubectl: it is the
// body of `tetherctl login`, a client-go exec credential plugin. A cached
// token is used while it lasts, a refresh token renews it without a
// person, and only then does it run the authorization code flow with PKCE
// on a loopback redirect (RFC 8252), opening the user's browser.
package login

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Options configure Token.
type Options struct {
	Issuer, ClientID, LoginHint string
	Scopes                      []string
	// CAFile is trusted for the issuer besides the system roots.
	CAFile string
	// CacheDir keeps one token file per issuer, client, hint and scopes.
	CacheDir string
	// Listen is the loopback address of the redirect listener.
	Listen string
	// Browser opens the authorization URL; the flow waits for the
	// redirect whatever it does.
	Browser func(ctx context.Context, url string) error
	Timeout time.Duration
	Log     io.Writer
}

// Credential is an ID token and when it expires.
type Credential struct {
	Token  string
	Expiry time.Time
}

// cached is the cache file.
type cached struct {
	IDToken      string    `json:"id_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"`
}

// Token returns a valid ID token: cached, refreshed, or from a new login.
func Token(ctx context.Context, o Options) (Credential, error) {
	if o.Issuer == "" || o.ClientID == "" || o.CacheDir == "" {
		return Credential{}, errors.New("login: issuer, client id and cache folder are required")
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	path := cachePath(o)
	c, _ := readCache(path)
	// Used as is only with half a minute to spare, so kubectl's request
	// does not carry a token that expires on the way.
	if c.IDToken != "" && time.Until(c.Expiry) > 30*time.Second {
		return Credential{Token: c.IDToken, Expiry: c.Expiry}, nil
	}
	client, err := httpClient(o.CAFile)
	if err != nil {
		return Credential{}, err
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	conf, err := discover(ctx, client, o)
	if err != nil {
		return Credential{}, err
	}
	var tok *oauth2.Token
	if c.RefreshToken != "" {
		tok, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: c.RefreshToken}).Token()
		if err != nil {
			fmt.Fprintf(o.Log, "tetherctl login: refreshing failed (%v); logging in again\n", err)
			tok = nil
		}
	}
	nonce := ""
	if tok == nil {
		nonce = random()
		if tok, err = interactive(ctx, conf, o, nonce); err != nil {
			return Credential{}, err
		}
	}
	cred, err := fromToken(tok, nonce)
	if err != nil {
		return Credential{}, err
	}
	next := cached{IDToken: cred.Token, RefreshToken: tok.RefreshToken, Expiry: cred.Expiry}
	if next.RefreshToken == "" {
		next.RefreshToken = c.RefreshToken
	}
	if err := writeCache(path, next); err != nil {
		fmt.Fprintf(o.Log, "tetherctl login: caching the token: %v\n", err)
	}
	return cred, nil
}

func cachePath(o Options) string {
	key := sha256.Sum256([]byte(strings.Join([]string{o.Issuer, o.ClientID, o.LoginHint, strings.Join(o.Scopes, " ")}, "\x00")))
	return filepath.Join(o.CacheDir, hex.EncodeToString(key[:16])+".json")
}

func readCache(path string) (cached, error) {
	var c cached
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

// writeCache replaces the file atomically, readable only by its owner: it
// holds a refresh token.
func writeCache(path string, c cached) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".token-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func httpClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("login: reading the CA: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("login: no certificate in %s", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// discover reads the issuer's endpoints; the document must name the issuer
// asked for, or tokens would come from somewhere else.
func discover(ctx context.Context, client *http.Client, o Options) (*oauth2.Config, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(o.Issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("login: discovering %s: %w", o.Issuer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("login: discovering %s: %s", o.Issuer, resp.Status)
	}
	var doc struct {
		Issuer   string `json:"issuer"`
		AuthURL  string `json:"authorization_endpoint"`
		TokenURL string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("login: discovery document: %w", err)
	}
	if doc.Issuer != o.Issuer {
		return nil, fmt.Errorf("login: %s calls itself %q", o.Issuer, doc.Issuer)
	}
	scopes := o.Scopes
	if len(scopes) == 0 {
		scopes = []string{"openid", "email", "profile", "groups", "offline_access"}
	}
	return &oauth2.Config{ClientID: o.ClientID, Scopes: scopes,
		Endpoint: oauth2.Endpoint{AuthURL: doc.AuthURL, TokenURL: doc.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}, nil
}

// interactive runs the code flow: a loopback listener for the redirect, the
// browser for the person, PKCE so that nobody else can redeem the code.
func interactive(ctx context.Context, conf *oauth2.Config, o Options, nonce string) (*oauth2.Token, error) {
	listen := o.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("login: listening for the redirect: %w", err)
	}
	defer ln.Close()
	c := *conf
	c.RedirectURL = "http://" + ln.Addr().String() + "/callback"
	state, verifier := random(), oauth2.GenerateVerifier()
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce)}
	if o.LoginHint != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", o.LoginHint))
	}
	authURL := c.AuthCodeURL(state, opts...)

	type result struct {
		code string
		err  error
	}
	got := make(chan result, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var res result
		switch {
		case q.Get("state") != state:
			res.err = errors.New("login: the redirect carried another state: not our login")
		case q.Get("error") != "":
			res.err = fmt.Errorf("login: the issuer refused: %s %s", q.Get("error"), q.Get("error_description"))
		case q.Get("code") == "":
			res.err = errors.New("login: the redirect carried no code")
		default:
			res.code = q.Get("code")
		}
		// The outcome first, then the page: a browser command that exits
		// on the page must not decide the outcome instead.
		select {
		case got <- res:
		default:
		}
		if res.err != nil {
			http.Error(w, res.err.Error(), http.StatusBadRequest)
		} else {
			_, _ = io.WriteString(w, "You are logged in to Tether. Return to your terminal.\n")
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	fmt.Fprintf(o.Log, "Open this URL to log in: %s\n", authURL)
	if o.Browser != nil {
		go func() {
			if err := o.Browser(ctx, authURL); err != nil {
				select {
				case got <- result{err: fmt.Errorf("login: opening the browser: %w", err)}:
				default:
				}
			}
		}()
	}
	var res result
	select {
	case res = <-got:
	case <-ctx.Done():
		return nil, fmt.Errorf("login: no login within %v", o.Timeout)
	}
	if res.err != nil {
		return nil, res.err
	}
	tok, err := c.Exchange(ctx, res.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("login: exchanging the code: %w", err)
	}
	return tok, nil
}

// fromToken takes the ID token out of a token response. Its expiry comes
// from its own exp claim. The signature is not checked here: the gateway
// checks it on every request, and this program only carries the token.
func fromToken(tok *oauth2.Token, nonce string) (Credential, error) {
	idt, _ := tok.Extra("id_token").(string)
	if idt == "" {
		return Credential{}, errors.New("login: the issuer returned no id_token")
	}
	parts := strings.Split(idt, ".")
	if len(parts) != 3 {
		return Credential{}, errors.New("login: the id_token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Credential{}, fmt.Errorf("login: the id_token's claims: %w", err)
	}
	var claims struct {
		Exp   int64  `json:"exp"`
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == 0 {
		return Credential{}, errors.New("login: the id_token has no expiry")
	}
	if nonce != "" && claims.Nonce != nonce {
		return Credential{}, errors.New("login: the id_token answers another login (nonce)")
	}
	return Credential{Token: idt, Expiry: time.Unix(claims.Exp, 0)}, nil
}

func random() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ExecCredential is what client-go reads from an exec plugin's stdout.
func ExecCredential(apiVersion string, c Credential) ([]byte, error) {
	if apiVersion == "" {
		apiVersion = "client.authentication.k8s.io/v1"
	}
	return json.Marshal(map[string]any{
		"kind": "ExecCredential", "apiVersion": apiVersion,
		"status": map[string]any{"token": c.Token, "expirationTimestamp": c.Expiry.UTC().Format(time.RFC3339)},
	})
}
