package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// OIDCConfig configures verification of ID tokens from one issuer.
type OIDCConfig struct {
	// IssuerURL must equal the tokens' iss claim and serve discovery.
	IssuerURL string
	// ClientID is the audience tokens must be issued for.
	ClientID string
	// CAFile, if set, is trusted for the issuer's TLS certificate in
	// addition to the system roots.
	CAFile string
	// SigningAlgs is the allow-list of signature algorithms; never "none".
	SigningAlgs []string
	Claims      Claims
	// KeyRefresh is the least time between two fetches of the issuer's keys
	// caused by tokens whose key is unknown, so forged key ids cannot make
	// the gateway hammer the issuer. Default 10s.
	KeyRefresh time.Duration
	Logger     *slog.Logger
}

// OIDC authenticates ID tokens. It discovers its issuer lazily and keeps
// trying, so a gateway starts (and serves static tokens) while the issuer
// is away; until discovery succeeds, ID tokens get ErrUnavailable.
type OIDC struct {
	cfg    OIDCConfig
	client *http.Client

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	lastTry  time.Time
	lastErr  error
}

// NewOIDC validates cfg. It does not reach the issuer: Ready does.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	if !strings.HasPrefix(cfg.IssuerURL, "https://") {
		return nil, fmt.Errorf("oidc: the issuer URL must be https, got %q", cfg.IssuerURL)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("oidc: a client id (the audience) is required")
	}
	if len(cfg.SigningAlgs) == 0 {
		cfg.SigningAlgs = []string{oidc.RS256, oidc.ES256}
	}
	for _, a := range cfg.SigningAlgs {
		if !supportedAlg[jose.SignatureAlgorithm(a)] {
			return nil, fmt.Errorf("oidc: signing algorithm %q is not allowed", a)
		}
	}
	if err := cfg.Claims.Validate(); err != nil {
		return nil, err
	}
	if cfg.KeyRefresh <= 0 {
		cfg.KeyRefresh = 10 * time.Second
	}
	if cfg.Logger == nil {
		return nil, errors.New("oidc: a logger is required")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("oidc: reading the issuer CA: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("oidc: no certificate in %s", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &OIDC{cfg: cfg, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}, nil
}

// Asymmetric algorithms only: an HMAC "signature" would be checked with a
// key the issuer publishes.
var supportedAlg = map[jose.SignatureAlgorithm]bool{
	jose.RS256: true, jose.RS384: true, jose.RS512: true,
	jose.PS256: true, jose.PS384: true, jose.PS512: true,
	jose.ES256: true, jose.ES384: true, jose.ES512: true, jose.EdDSA: true,
}

// Ready discovers the issuer if that has not happened yet.
func (o *OIDC) Ready(ctx context.Context) error {
	_, err := o.discover(ctx, true)
	return err
}

// discover returns the verifier, trying discovery at most every few
// seconds unless force is set.
func (o *OIDC) discover(ctx context.Context, force bool) (*oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.verifier != nil {
		return o.verifier, nil
	}
	if !force && time.Since(o.lastTry) < 5*time.Second {
		return nil, fmt.Errorf("%w: issuer %s: %v", ErrUnavailable, o.cfg.IssuerURL, o.lastErr)
	}
	o.lastTry = time.Now()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, o.client), o.cfg.IssuerURL)
	if err != nil {
		o.lastErr = err
		return nil, fmt.Errorf("%w: discovering %s: %v", ErrUnavailable, o.cfg.IssuerURL, err)
	}
	var doc struct {
		JWKS string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil || doc.JWKS == "" {
		o.lastErr = fmt.Errorf("discovery document of %s has no jwks_uri", o.cfg.IssuerURL)
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, o.lastErr)
	}
	algs := make([]jose.SignatureAlgorithm, len(o.cfg.SigningAlgs))
	for i, a := range o.cfg.SigningAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	keys := &keySet{url: doc.JWKS, client: o.client, algs: algs, minRefresh: o.cfg.KeyRefresh, log: o.cfg.Logger}
	o.verifier = oidc.NewVerifier(o.cfg.IssuerURL, keys, &oidc.Config{ClientID: o.cfg.ClientID, SupportedSigningAlgs: o.cfg.SigningAlgs})
	o.cfg.Logger.Info("oidc issuer discovered", "issuer", o.cfg.IssuerURL, "jwks", doc.JWKS)
	return o.verifier, nil
}

// Authenticate verifies an ID token: signature by one of the issuer's
// current keys with an allowed algorithm, issuer, audience and expiry; then
// maps its claims.
func (o *OIDC) Authenticate(ctx context.Context, token string) (User, error) {
	// Not a JWT: some other authenticator's token, or garbage. Either way
	// there is no reason to reach the issuer for it.
	if strings.Count(token, ".") != 2 {
		return User{}, ErrUnknown
	}
	v, err := o.discover(ctx, false)
	if err != nil {
		return User{}, err
	}
	idt, err := v.Verify(ctx, token)
	if err != nil {
		return User{}, fmt.Errorf("%w: %v", ErrUnknown, err)
	}
	var payload jsonRaw
	if err := idt.Claims(&payload); err != nil {
		return User{}, fmt.Errorf("%w: %v", ErrUnknown, err)
	}
	u, err := o.cfg.Claims.Map(payload)
	if err != nil {
		return User{}, fmt.Errorf("%w: %v", ErrUnknown, err)
	}
	return u, nil
}

type jsonRaw []byte

func (j *jsonRaw) UnmarshalJSON(b []byte) error { *j = append((*j)[:0], b...); return nil }

// keySet holds the issuer's public keys. A token signed by a key it does
// not know makes it fetch the keys again (the issuer rotated them), but at
// most once every minRefresh, and one fetch at a time.
type keySet struct {
	url        string
	client     *http.Client
	algs       []jose.SignatureAlgorithm
	minRefresh time.Duration
	log        *slog.Logger

	mu   sync.RWMutex
	keys jose.JSONWebKeySet

	fetchMu sync.Mutex
	fetched time.Time
}

func (k *keySet) VerifySignature(ctx context.Context, token string) ([]byte, error) {
	jws, err := jose.ParseSigned(token, k.algs)
	if err != nil {
		return nil, fmt.Errorf("parsing the token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("the token must carry exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	k.mu.RLock()
	keys := k.keys
	k.mu.RUnlock()
	if payload, ok := verifyWith(jws, keys, kid); ok {
		return payload, nil
	}
	keys, err = k.refresh(ctx)
	if err != nil {
		return nil, err
	}
	if payload, ok := verifyWith(jws, keys, kid); ok {
		return payload, nil
	}
	return nil, errors.New("no key of the issuer verifies the token's signature")
}

func verifyWith(jws *jose.JSONWebSignature, set jose.JSONWebKeySet, kid string) ([]byte, bool) {
	for _, key := range set.Keys {
		if kid != "" && key.KeyID != kid || !key.IsPublic() || key.Use == "enc" {
			continue
		}
		if payload, err := jws.Verify(key); err == nil {
			return payload, true
		}
	}
	return nil, false
}

func (k *keySet) refresh(ctx context.Context) (jose.JSONWebKeySet, error) {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	if time.Since(k.fetched) < k.minRefresh {
		k.mu.RLock()
		defer k.mu.RUnlock()
		return k.keys, nil
	}
	k.fetched = time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("fetching the issuer's keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return jose.JSONWebKeySet{}, fmt.Errorf("fetching the issuer's keys: %s", resp.Status)
	}
	var set jose.JSONWebKeySet
	if err := decodeLimited(resp.Body, &set); err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("decoding the issuer's keys: %w", err)
	}
	k.mu.Lock()
	k.keys = set
	k.mu.Unlock()
	k.log.Info("oidc keys fetched", "jwks", k.url, "keys", len(set.Keys))
	return set, nil
}
