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
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
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
	macContext       = "tether identity mac v1\x00"
	macKeyContext    = "tether identity mac key v1\x00"
	agreementContext = "tether gateway agreement key v1\x00"
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

// Certify returns the certificate of pub, valid from notBefore to notAfter,
// with the gateway's X25519 key agreement (AgreementPublic of its private
// key; nil: the gateway only signs).
func (r *Root) Certify(pub ed25519.PublicKey, agreement []byte, notBefore, notAfter time.Time) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize || !notAfter.After(notBefore) {
		return nil, errors.New("assertion: certifying needs an Ed25519 public key and a window that ends after it begins")
	}
	if agreement != nil {
		if _, err := ecdh.X25519().NewPublicKey(agreement); err != nil {
			return nil, fmt.Errorf("assertion: the agreement key: %w", err)
		}
	}
	key, err := proto.Marshal(&tetherv1.GatewayKey{PublicKey: pub, NotBeforeUnix: notBefore.Unix(), NotAfterUnix: notAfter.Unix(), AgreementKey: agreement})
	if err != nil {
		return nil, err
	}
	return proto.Marshal(&tetherv1.GatewayKeyCertificate{Key: key, Signature: ed25519.Sign(r.key, append([]byte(keyContext), key...))})
}

// agreementKey is the gateway's X25519 key, derived from its Ed25519
// seed, so the key file holds one key and the certificate vouches for both.
func agreementKey(key ed25519.PrivateKey) *ecdh.PrivateKey {
	sum := sha256.Sum256(append([]byte(agreementContext), key.Seed()...))
	k, err := ecdh.X25519().NewPrivateKey(sum[:])
	if err != nil {
		panic("assertion: an X25519 key from 32 bytes: " + err.Error())
	}
	return k
}

// AgreementPublic is the X25519 public key a gateway key agrees MAC keys
// with, for its certificate (Root.Certify).
func AgreementPublic(key ed25519.PrivateKey) []byte {
	return agreementKey(key).PublicKey().Bytes()
}

// agreeMACKey derives, with own and the other side's X25519 public key
// peer, the key of the MACs between the gateway whose agreement key is
// gateway and the agent whose key is agent; false if peer is no X25519
// key or a low-order point (no secret to agree on).
func agreeMACKey(own *ecdh.PrivateKey, peer, gateway, agent []byte) ([sha256.Size]byte, bool) {
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	shared, err := own.ECDH(pub)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	return macKey(shared, gateway, agent), true
}

// macKey derives the MAC key from the shared secret and both keys.
func macKey(shared, gateway, agent []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(macKeyContext))
	h.Write(shared)
	h.Write(gateway)
	h.Write(agent)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func mac(key [sha256.Size]byte, assertion []byte) []byte {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(macContext))
	m.Write(assertion)
	return m.Sum(nil)
}

// Signer signs assertions with a certified gateway key.
type Signer struct {
	key  ed25519.PrivateKey
	cert []byte
	// agree is nil when the certificate names no agreement key: then the
	// gateway only signs.
	agree *ecdh.PrivateKey

	mu sync.Mutex
	// macKeys by the agent's key: one per cluster at most, bounded by
	// maxMACKeys all the same.
	macKeys map[[32]byte][sha256.Size]byte
}

// maxMACKeys bounds the agents' MAC keys a signer keeps (one per cluster
// of a 10,000-cluster fleet); past it they are derived again.
const maxMACKeys = 10000

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
	sg := &Signer{key: key, cert: cert, macKeys: map[[32]byte][sha256.Size]byte{}}
	if len(k.GetAgreementKey()) > 0 {
		agree := agreementKey(key)
		if !bytes.Equal(agree.PublicKey().Bytes(), k.GetAgreementKey()) {
			return nil, errors.New("assertion: the certificate's agreement key is not the gateway key's")
		}
		sg.agree = agree
	}
	return sg, nil
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
	return s.SignFor(a, nil)
}

// SignFor signs a and, when agent is the X25519 key of the cluster's
// agent (Response.agent_key) and the gateway's certificate has an
// agreement key, adds a MAC that agent checks at a fraction of a
// signature's cost. Any other agent checks the signature.
func (s *Signer) SignFor(a *tetherv1.IdentityAssertion, agent []byte) (*tetherv1.SignedIdentity, error) {
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
	si := &tetherv1.SignedIdentity{Assertion: b, Signature: ed25519.Sign(s.key, append([]byte(assertionContext), b...)), KeyCertificate: s.cert}
	if k, ok := s.macKeyFor(agent); ok {
		si.Mac, si.MacKey = mac(k, b), agent
	}
	return si, nil
}

// macKeyFor is the MAC key shared with agent, derived once.
func (s *Signer) macKeyFor(agent []byte) ([sha256.Size]byte, bool) {
	if s.agree == nil || len(agent) != 32 {
		return [sha256.Size]byte{}, false
	}
	id := [32]byte(agent)
	s.mu.Lock()
	k, ok := s.macKeys[id]
	s.mu.Unlock()
	if ok {
		return k, true
	}
	k, ok = agreeMACKey(s.agree, agent, s.agree.PublicKey().Bytes(), agent)
	if !ok {
		return k, false
	}
	s.mu.Lock()
	if len(s.macKeys) >= maxMACKeys {
		clear(s.macKeys)
	}
	s.macKeys[id] = k
	s.mu.Unlock()
	return k, true
}

// Verifier checks signed identities against the identity root. It keeps
// the gateway keys it verified, so a request costs one signature check, or
// one MAC check when the gateway knew this verifier's agreement key
// (AgentKey).
type Verifier struct {
	root ed25519.PublicKey
	// skew is how far in the future an issue time may be.
	skew time.Duration
	// agree is this agent's X25519 key, new with each process: a gateway
	// learns it from the responses (Response.agent_key).
	agree    *ecdh.PrivateKey
	agreePub []byte
	// byMAC and bySignature count the identities accepted each way.
	byMAC, bySignature atomic.Uint64

	mu sync.Mutex
	// keys are certificates already verified, by their hash: a handful
	// of gateway keys at a time, bounded by maxKeys all the same.
	keys map[[sha256.Size]byte]*verifiedKey
}

// verifiedKey is a gateway key the root certified, and the MAC key this
// agent shares with it (when it has an agreement key).
type verifiedKey struct {
	key    *tetherv1.GatewayKey
	mac    [sha256.Size]byte
	hasMAC bool
}

// maxKeys bounds the verified keys kept; past it they are verified again.
const maxKeys = 64

// NewVerifier trusts keys certified by root.
func NewVerifier(root ed25519.PublicKey) (*Verifier, error) {
	if len(root) != ed25519.PublicKeySize {
		return nil, errors.New("assertion: the identity root is not an Ed25519 public key")
	}
	agree, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("assertion: the agent's agreement key: %w", err)
	}
	return &Verifier{root: root, skew: time.Minute, agree: agree, agreePub: agree.PublicKey().Bytes(), keys: map[[sha256.Size]byte]*verifiedKey{}}, nil
}

// Checks counts the identities this verifier accepted by their MAC and by
// their signature.
func (v *Verifier) Checks() (byMAC, bySignature uint64) {
	return v.byMAC.Load(), v.bySignature.Load()
}

// AgentKey is this verifier's X25519 public key, which the agent announces
// in its responses (Response.agent_key) so the gateway can add MACs for it.
// The caller must not change it.
func (v *Verifier) AgentKey() []byte { return v.agreePub }

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
	vk, err := v.key(si.KeyCertificate)
	if err != nil {
		return nil, err
	}
	key := vk.key
	if now.Unix() < key.GetNotBeforeUnix() || now.Unix() >= key.GetNotAfterUnix() {
		return nil, fmt.Errorf("%w: the gateway key is not valid now (from %s to %s)", ErrInvalid,
			time.Unix(key.GetNotBeforeUnix(), 0).UTC().Format(time.RFC3339), time.Unix(key.GetNotAfterUnix(), 0).UTC().Format(time.RFC3339))
	}
	// The MAC when it is for this agent, else (or if it is wrong: the
	// signature decides) the signature.
	macOK := vk.hasMAC && len(si.Mac) == sha256.Size && bytes.Equal(si.MacKey, v.AgentKey()) && hmac.Equal(mac(vk.mac, si.Assertion), si.Mac)
	if !macOK && !ed25519.Verify(key.GetPublicKey(), append([]byte(assertionContext), si.Assertion...), si.Signature) {
		return nil, fmt.Errorf("%w: bad signature", ErrInvalid)
	}
	if macOK {
		v.byMAC.Add(1)
	} else {
		v.bySignature.Add(1)
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
func (v *Verifier) key(cert []byte) (*verifiedKey, error) {
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
	gk := new(tetherv1.GatewayKey)
	if err := proto.Unmarshal(c.Key, gk); err != nil || len(gk.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: malformed gateway key", ErrInvalid)
	}
	k = &verifiedKey{key: gk}
	k.mac, k.hasMAC = agreeMACKey(v.agree, gk.GetAgreementKey(), gk.GetAgreementKey(), v.AgentKey())
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
	cert, err := root.Certify(pub, AgreementPublic(priv), now.Add(-time.Minute), now.Add(validity))
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
