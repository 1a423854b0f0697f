// Package agentcred is the credential an agent presents on every connect:
// a token naming one cluster (id and uid), signed with Ed25519 by
// agent-registry and checked by subscribers with the public key alone.
//
// The format is Tether's own, "tac1.<key id>.<claims>.<signature>" with
// base64url parts: one algorithm, fixed by the version prefix, so there is
// no algorithm for a forger to choose (see docs/adr/004).
package agentcred

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

const prefix = "tac1."

// Claims are what a credential says.
type Claims struct {
	// ClusterID and ClusterUID name the one cluster the agent may serve;
	// the uid tells it from a later cluster of the same id.
	ClusterID  string `json:"cid"`
	ClusterUID string `json:"uid"`
	// ID is unique per credential, for logs and audit.
	ID       string    `json:"jti"`
	IssuedAt time.Time `json:"iat"`
	Expires  time.Time `json:"exp"`
}

// MaxLen bounds a credential, so a verifier never decodes a large input.
const MaxLen = 1024

// Signer issues credentials.
type Signer struct {
	key ed25519.PrivateKey
	kid string
}

// NewSigner signs with key.
func NewSigner(key ed25519.PrivateKey) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("agentcred: not an Ed25519 private key")
	}
	return &Signer{key: key, kid: KeyID(key.Public().(ed25519.PublicKey))}, nil
}

// LoadSigner reads a PKCS#8 PEM Ed25519 private key.
func LoadSigner(path string) (*Signer, error) {
	key, err := ReadPrivateKey(path)
	if err != nil {
		return nil, err
	}
	return NewSigner(key)
}

// ReadPrivateKey reads a PKCS#8 PEM Ed25519 private key, as WriteKeyPair
// writes it.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agentcred: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("agentcred: no PEM block in %s", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("agentcred: parsing %s: %w", path, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("agentcred: %s is not an Ed25519 key", path)
	}
	return key, nil
}

// KeyID names a public key in tokens: the first 8 bytes of its SHA-256.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// NewID returns a random credential id.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Sign returns the token for c.
func (s *Signer) Sign(c Claims) (string, error) {
	if c.ClusterID == "" || c.ClusterUID == "" || c.ID == "" || !c.Expires.After(c.IssuedAt) {
		return "", errors.New("agentcred: a credential needs a cluster id and uid, an id and an expiry after its issue")
	}
	c.IssuedAt, c.Expires = c.IssuedAt.UTC().Truncate(time.Second), c.Expires.UTC().Truncate(time.Second)
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := prefix + s.kid + "." + base64.RawURLEncoding.EncodeToString(payload)
	sig := ed25519.Sign(s.key, []byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// Public is the signer's public key, for verifiers.
func (s *Signer) Public() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Verifier checks credentials against a set of public keys: the current
// signing key and, during a rotation, the previous one.
type Verifier struct {
	keys map[string]ed25519.PublicKey
	// Skew is how far in the future an issue time may be.
	skew time.Duration
}

// NewVerifier trusts keys.
func NewVerifier(keys ...ed25519.PublicKey) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, errors.New("agentcred: at least one public key is required")
	}
	v := &Verifier{keys: map[string]ed25519.PublicKey{}, skew: time.Minute}
	for _, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return nil, errors.New("agentcred: not an Ed25519 public key")
		}
		v.keys[KeyID(k)] = k
	}
	return v, nil
}

// LoadVerifier trusts the keys in PEM files (ReadPublicKeys).
func LoadVerifier(paths ...string) (*Verifier, error) {
	keys, err := ReadPublicKeys(paths...)
	if err != nil {
		return nil, err
	}
	return NewVerifier(keys...)
}

// ReadPublicKeys reads PKIX PEM Ed25519 public keys, any number per file.
func ReadPublicKeys(paths ...string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("agentcred: %w", err)
		}
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			k, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("agentcred: parsing %s: %w", p, err)
			}
			pub, ok := k.(ed25519.PublicKey)
			if !ok {
				return nil, fmt.Errorf("agentcred: %s holds a key that is not Ed25519", p)
			}
			keys = append(keys, pub)
		}
	}
	return keys, nil
}

// ErrInvalid: the token is not a credential Tether issued, or no longer
// valid. Verify wraps it with why.
var ErrInvalid = errors.New("agentcred: invalid credential")

// Verify checks token's signature and validity at now.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	return v.VerifyExpiredWithin(token, now, 0)
}

// VerifyExpiredWithin is Verify, also accepting a credential that expired
// less than grace ago: for renewal only, so an agent whose cluster was
// offline for a while gets a new credential without a new bootstrap token.
func (v *Verifier) VerifyExpiredWithin(token string, now time.Time, grace time.Duration) (Claims, error) {
	if len(token) > MaxLen || !strings.HasPrefix(token, prefix) {
		return Claims{}, fmt.Errorf("%w: not a credential", ErrInvalid)
	}
	parts := strings.Split(token[len(prefix):], ".")
	if len(parts) != 3 {
		return Claims{}, fmt.Errorf("%w: malformed", ErrInvalid)
	}
	key, ok := v.keys[parts[0]]
	if !ok {
		return Claims{}, fmt.Errorf("%w: signed by an unknown key %q", ErrInvalid, parts[0])
	}
	sig, err := strict.DecodeString(parts[2])
	if err != nil || !ed25519.Verify(key, []byte(prefix+parts[0]+"."+parts[1]), sig) {
		return Claims{}, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	payload, err := strict.DecodeString(parts[1])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: malformed claims", ErrInvalid)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: malformed claims", ErrInvalid)
	}
	switch {
	case c.ClusterID == "" || c.ClusterUID == "" || c.ID == "":
		return Claims{}, fmt.Errorf("%w: incomplete claims", ErrInvalid)
	case !now.Before(c.Expires.Add(grace)):
		return Claims{}, fmt.Errorf("%w: expired at %s", ErrInvalid, c.Expires.Format(time.RFC3339))
	case c.IssuedAt.After(now.Add(v.skew)):
		return Claims{}, fmt.Errorf("%w: issued in the future", ErrInvalid)
	}
	return c, nil
}

// WriteKeyPair writes a new Ed25519 key pair as PEM: the private key
// (0600) to privPath and its public key to pubPath. For development stacks
// and tests; production keys come from a secret store.
func WriteKeyPair(privPath, pubPath string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	if err := os.WriteFile(privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		return fmt.Errorf("agentcred: %w", err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), 0o644); err != nil {
		return fmt.Errorf("agentcred: %w", err)
	}
	return nil
}

// strict decoding: one encoding per token, so a token is either the one
// signed or refused.
var strict = base64.RawURLEncoding.Strict()
