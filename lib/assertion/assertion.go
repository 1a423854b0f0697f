// Package assertion signs and verifies who makes a request: the gateway
// that authenticated a user signs an IdentityAssertion bound to one request
// to one cluster, and the agent of that cluster impersonates only what it
// verified. Nothing between them, router, NATS or subscriber, can make or
// change one (ADR 011).
//
// Trust starts at an identity root, an Ed25519 key pair whose private half
// stays offline. It certifies gateway signing keys (GatewayKeyCertificate),
// each valid for a window; agents are installed with the root's public key
// and accept a signature by any key the root certified, sent along with
// every assertion. So gateway keys rotate without telling any agent, and no
// service on the way is trusted to hand out keys.
package assertion

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tether-dev/tether/lib/agentcred"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// Domain separation: a signature made for one purpose is never valid for
// the other, nor for anything else signed with an Ed25519 key.
const (
	assertionContext = "tether identity assertion v1\x00"
	keyContext       = "tether gateway key v1\x00"
)

// Bounds on what a verifier decodes: an assertion carries at most a few
// hundred groups and their extras.
const (
	MaxAssertion   = 128 << 10
	maxCertificate = 512
)

// CertificateBlock is the PEM type of a gateway key's certificate.
const CertificateBlock = "TETHER GATEWAY KEY CERTIFICATE"

// ErrInvalid: the identity was not signed by a key the root certified, or
// is not valid now. Errors wrap it with why.
var ErrInvalid = errors.New("assertion: invalid signed identity")

// Root certifies gateway keys.
type Root struct {
	key ed25519.PrivateKey
}

// NewRoot certifies with key.
func NewRoot(key ed25519.PrivateKey) (*Root, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("assertion: the identity root is not an Ed25519 private key")
	}
	return &Root{key: key}, nil
}

// Public is the root's public key, which agents are installed with.
func (r *Root) Public() ed25519.PublicKey { return r.key.Public().(ed25519.PublicKey) }

// Certify returns the certificate of pub, valid from notBefore to notAfter.
func (r *Root) Certify(pub ed25519.PublicKey, notBefore, notAfter time.Time) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize || !notAfter.After(notBefore) {
		return nil, errors.New("assertion: certifying needs an Ed25519 public key and a window that ends after it begins")
	}
	key, err := proto.Marshal(&tetherv1.GatewayKey{PublicKey: pub, NotBeforeUnix: notBefore.Unix(), NotAfterUnix: notAfter.Unix()})
	if err != nil {
		return nil, err
	}
	return proto.Marshal(&tetherv1.GatewayKeyCertificate{Key: key, Signature: ed25519.Sign(r.key, append([]byte(keyContext), key...))})
}

// Signer signs assertions with a certified gateway key.
type Signer struct {
	key  ed25519.PrivateKey
	cert []byte
}

// NewSigner signs with key, whose certificate is cert. It refuses a
// certificate of another key: every signature would be refused.
func NewSigner(key ed25519.PrivateKey, cert []byte) (*Signer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("assertion: the gateway key is not an Ed25519 private key")
	}
	var c tetherv1.GatewayKeyCertificate
	var k tetherv1.GatewayKey
	if err := proto.Unmarshal(cert, &c); err != nil {
		return nil, fmt.Errorf("assertion: reading the gateway key's certificate: %w", err)
	}
	if err := proto.Unmarshal(c.GetKey(), &k); err != nil {
		return nil, fmt.Errorf("assertion: reading the gateway key's certificate: %w", err)
	}
	if !key.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(k.GetPublicKey())) {
		return nil, errors.New("assertion: the certificate is for another key than the gateway key")
	}
	return &Signer{key: key, cert: cert}, nil
}

// NotAfter is when the signing key's certificate ends: past it, every
// agent refuses what this signer signs.
func (s *Signer) NotAfter() time.Time {
	var c tetherv1.GatewayKeyCertificate
	var k tetherv1.GatewayKey
	_ = proto.Unmarshal(s.cert, &c)
	_ = proto.Unmarshal(c.GetKey(), &k)
	return time.Unix(k.GetNotAfterUnix(), 0)
}

// Sign signs a.
func (s *Signer) Sign(a *tetherv1.IdentityAssertion) (*tetherv1.SignedIdentity, error) {
	if a.GetIdentity().GetUser() == "" || a.GetClusterId() == "" || a.GetRequestId() == "" || a.GetExpiresUnixMilli() <= a.GetIssuedUnixMilli() {
		return nil, errors.New("assertion: an assertion needs a user, a cluster, a request and an expiry after its issue")
	}
	b, err := proto.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("assertion: %w", err)
	}
	if len(b) > MaxAssertion {
		return nil, fmt.Errorf("assertion: the identity takes %d bytes, more than the %d an agent reads", len(b), MaxAssertion)
	}
	return &tetherv1.SignedIdentity{Assertion: b, Signature: ed25519.Sign(s.key, append([]byte(assertionContext), b...)), KeyCertificate: s.cert}, nil
}

// Verifier checks signed identities against the identity root. It keeps
// the gateway keys it verified, so a request costs one signature check.
type Verifier struct {
	root ed25519.PublicKey
	// skew is how far in the future an issue time may be.
	skew time.Duration

	mu sync.Mutex
	// keys are certificates already verified, by their hash: a handful
	// of gateway keys at a time, bounded by maxKeys all the same.
	keys map[[sha256.Size]byte]*tetherv1.GatewayKey
}

// maxKeys bounds the verified keys kept; past it they are verified again.
const maxKeys = 64

// NewVerifier trusts keys certified by root.
func NewVerifier(root ed25519.PublicKey) (*Verifier, error) {
	if len(root) != ed25519.PublicKeySize {
		return nil, errors.New("assertion: the identity root is not an Ed25519 public key")
	}
	return &Verifier{root: root, skew: time.Minute, keys: map[[sha256.Size]byte]*tetherv1.GatewayKey{}}, nil
}

// LoadVerifier trusts the root whose public key is in the PEM file path.
func LoadVerifier(path string) (*Verifier, error) {
	keys, err := agentcred.ReadPublicKeys(path)
	if err != nil {
		return nil, fmt.Errorf("assertion: reading the identity root: %w", err)
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("assertion: %s holds %d keys, not the one identity root", path, len(keys))
	}
	return NewVerifier(keys[0])
}

// Verify returns the assertion si carries if a key the root certified
// signed it, that key's window holds now, and the assertion has not
// expired. Binding it to a request is Bind's.
func (v *Verifier) Verify(si *tetherv1.SignedIdentity, now time.Time) (*tetherv1.IdentityAssertion, error) {
	if si == nil {
		return nil, fmt.Errorf("%w: the request carries no signed identity", ErrInvalid)
	}
	if len(si.Assertion) > MaxAssertion || len(si.KeyCertificate) > maxCertificate {
		return nil, fmt.Errorf("%w: too large", ErrInvalid)
	}
	key, err := v.key(si.KeyCertificate)
	if err != nil {
		return nil, err
	}
	if now.Unix() < key.GetNotBeforeUnix() || now.Unix() >= key.GetNotAfterUnix() {
		return nil, fmt.Errorf("%w: the gateway key is not valid now (from %s to %s)", ErrInvalid,
			time.Unix(key.GetNotBeforeUnix(), 0).UTC().Format(time.RFC3339), time.Unix(key.GetNotAfterUnix(), 0).UTC().Format(time.RFC3339))
	}
	if !ed25519.Verify(key.GetPublicKey(), append([]byte(assertionContext), si.Assertion...), si.Signature) {
		return nil, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	a := new(tetherv1.IdentityAssertion)
	if err := proto.Unmarshal(si.Assertion, a); err != nil {
		return nil, fmt.Errorf("%w: malformed assertion", ErrInvalid)
	}
	switch ms := now.UnixMilli(); {
	case a.GetExpiresUnixMilli() <= ms:
		return nil, fmt.Errorf("%w: expired %s ago", ErrInvalid, time.Duration(ms-a.GetExpiresUnixMilli())*time.Millisecond)
	case a.GetIssuedUnixMilli() > ms+v.skew.Milliseconds():
		return nil, fmt.Errorf("%w: issued in the future", ErrInvalid)
	}
	return a, nil
}

// key returns the gateway key cert certifies, checking the root's
// signature the first time it sees the certificate.
func (v *Verifier) key(cert []byte) (*tetherv1.GatewayKey, error) {
	sum := sha256.Sum256(cert)
	v.mu.Lock()
	k := v.keys[sum]
	v.mu.Unlock()
	if k != nil {
		return k, nil
	}
	var c tetherv1.GatewayKeyCertificate
	if err := proto.Unmarshal(cert, &c); err != nil {
		return nil, fmt.Errorf("%w: malformed key certificate", ErrInvalid)
	}
	if !ed25519.Verify(v.root, append([]byte(keyContext), c.Key...), c.Signature) {
		return nil, fmt.Errorf("%w: the gateway key was not certified by the identity root", ErrInvalid)
	}
	k = new(tetherv1.GatewayKey)
	if err := proto.Unmarshal(c.Key, k); err != nil || len(k.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: malformed gateway key", ErrInvalid)
	}
	v.mu.Lock()
	if len(v.keys) >= maxKeys {
		clear(v.keys)
	}
	v.keys[sum] = k
	v.mu.Unlock()
	return k, nil
}

// LoadSigner reads a gateway key file: its PKCS#8 private key and its
// certificate, as PEM blocks (WriteGatewayKey).
func LoadSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("assertion: %w", err)
	}
	var key ed25519.PrivateKey
	var cert []byte
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("assertion: parsing %s: %w", path, err)
			}
			ek, ok := k.(ed25519.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("assertion: %s holds a key that is not Ed25519", path)
			}
			key = ek
		case CertificateBlock:
			cert = blk.Bytes
		}
	}
	if key == nil || cert == nil {
		return nil, fmt.Errorf("assertion: %s needs a PRIVATE KEY and a %s block", path, CertificateBlock)
	}
	return NewSigner(key, cert)
}

// WriteGatewayKey makes a new gateway key, certifies it with root for
// validity, and writes both to path (0600), as LoadSigner reads them.
func WriteGatewayKey(path string, root *Root, now time.Time, validity time.Duration) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	cert, err := root.Certify(pub, now.Add(-time.Minute), now.Add(validity))
	if err != nil {
		return err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	out := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), pem.EncodeToMemory(&pem.Block{Type: CertificateBlock, Bytes: cert})...)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return fmt.Errorf("assertion: %w", err)
	}
	return nil
}
