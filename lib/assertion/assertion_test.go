package assertion

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

func newRoot(t *testing.T) *Root {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRoot(priv)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newSigner(t *testing.T, r *Root, from, to time.Time) *Signer {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := r.Certify(pub, AgreementPublic(priv), from, to)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(priv, cert)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertionAt(now time.Time, ttl time.Duration) *tetherv1.IdentityAssertion {
	return &tetherv1.IdentityAssertion{
		Identity: &tetherv1.Identity{User: "alice", Groups: []string{"acme:developers"}}, Tenants: []string{"acme"},
		ClusterId: "dev", RequestId: "r1", Method: "GET", Path: "/api/v1/pods", Query: "limit=5",
		IssuedUnixMilli: now.UnixMilli(), ExpiresUnixMilli: now.Add(ttl).UnixMilli(),
	}
}

func TestVerify(t *testing.T) {
	now := time.Now()
	root := newRoot(t)
	v, err := NewVerifier(root.Public())
	if err != nil {
		t.Fatal(err)
	}
	signer := newSigner(t, root, now.Add(-time.Hour), now.Add(time.Hour))
	good, err := signer.Sign(assertionAt(now, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(s *Signer, a *tetherv1.IdentityAssertion) *tetherv1.SignedIdentity {
		si, err := s.Sign(a)
		if err != nil {
			t.Fatal(err)
		}
		return si
	}
	// Another root's key: a rogue that made its own "gateway" key.
	rogue := newSigner(t, newRoot(t), now.Add(-time.Hour), now.Add(time.Hour))
	altered := proto.Clone(good).(*tetherv1.SignedIdentity)
	a := assertionAt(now, time.Minute)
	a.Identity.Groups = append(a.Identity.Groups, "system:masters")
	altered.Assertion, _ = proto.Marshal(a)
	swapped := proto.Clone(good).(*tetherv1.SignedIdentity)
	swapped.KeyCertificate = rogue.cert

	// The MAC for this agent stands in for the signature; for another
	// agent, or wrong, the signature decides.
	signFor := func(s *Signer, a *tetherv1.IdentityAssertion, agent []byte) *tetherv1.SignedIdentity {
		si, err := s.SignFor(a, agent)
		if err != nil {
			t.Fatal(err)
		}
		if len(si.Mac) == 0 {
			t.Fatal("no MAC for a known agent key")
		}
		return si
	}
	other, _ := NewVerifier(root.Public())
	macOnly := signFor(signer, assertionAt(now, time.Minute), v.AgentKey())
	macOnly.Signature = nil
	macForOther := signFor(signer, assertionAt(now, time.Minute), other.AgentKey())
	macForOther.Signature = nil
	macAltered := signFor(signer, assertionAt(now, time.Minute), v.AgentKey())
	macAltered.Assertion = altered.Assertion
	macAltered.Signature = nil
	badMACGoodSig := signFor(signer, assertionAt(now, time.Minute), v.AgentKey())
	badMACGoodSig.Mac[0] ^= 1
	// A rogue's own certified-by-another-root key agreeing with this agent.
	rogueMAC := signFor(rogue, assertionAt(now, time.Minute), v.AgentKey())
	rogueMAC.Signature = nil

	tests := []struct {
		name string
		si   *tetherv1.SignedIdentity
		at   time.Time
		ok   bool
	}{
		{"signed by a certified key", good, now, true},
		{"none", nil, now, false},
		{"unsigned", &tetherv1.SignedIdentity{Assertion: good.Assertion}, now, false},
		{"altered after signing", altered, now, false},
		{"signed by a key another root certified", sign(rogue, assertionAt(now, time.Minute)), now, false},
		{"certificate swapped for another key's", swapped, now, false},
		{"expired", good, now.Add(2 * time.Minute), false},
		{"issued in the future", sign(signer, assertionAt(now.Add(10*time.Minute), time.Hour)), now, false},
		{"key not yet valid", sign(newSigner(t, root, now.Add(time.Hour), now.Add(2*time.Hour)), assertionAt(now, time.Minute)), now, false},
		{"key past its window", sign(newSigner(t, root, now.Add(-2*time.Hour), now.Add(-time.Hour)), assertionAt(now, time.Minute)), now, false},
		{"a MAC for this agent, no signature", macOnly, now, true},
		{"a MAC for another agent, no signature", macForOther, now, false},
		{"a MAC over another assertion", macAltered, now, false},
		{"a wrong MAC and a good signature", badMACGoodSig, now, true},
		{"a MAC from a key another root certified", rogueMAC, now, false},
		{"a MAC expired", macOnly, now.Add(2 * time.Minute), false},
		{"oversized", &tetherv1.SignedIdentity{Assertion: make([]byte, MaxAssertion+1), Signature: good.Signature, KeyCertificate: good.KeyCertificate}, now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(tt.si, tt.at)
			if tt.ok != (err == nil) {
				t.Fatalf("Verify = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			if tt.ok && got.GetIdentity().GetUser() != "alice" {
				t.Fatalf("verified %v", got)
			}
		})
	}
}

func TestSignerRefusesACertificateOfAnotherKey(t *testing.T) {
	root := newRoot(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := root.Certify(pub, nil, time.Now(), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewSigner(priv, cert); err == nil {
		t.Fatal("a signer took a certificate of another key")
	}
}

func TestGatewayKeyFile(t *testing.T) {
	root := newRoot(t)
	path := filepath.Join(t.TempDir(), "gateway-identity.key")
	now := time.Now()
	if err := WriteGatewayKey(path, root, now, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.NotAfter(); got.Sub(now.Add(24*time.Hour)).Abs() > time.Second {
		t.Fatalf("NotAfter = %v", got)
	}
	v, _ := NewVerifier(root.Public())
	si, err := s.Sign(assertionAt(now, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(si, now); err != nil {
		t.Fatal(err)
	}
}

func TestBind(t *testing.T) {
	open := func(method, path, query string) *tetherv1.Open {
		return &tetherv1.Open{RequestId: "r1", ClusterId: "dev", Method: method, Path: path, Query: query}
	}
	signed := func(query string) *tetherv1.IdentityAssertion {
		a := assertionAt(time.Now(), time.Minute)
		a.Query = query
		return a
	}
	watch := "watch=true&labelSelector=app%3Dweb&resourceVersion=10&timeoutSeconds=300&allowWatchBookmarks=true"
	tests := []struct {
		name   string
		a      *tetherv1.IdentityAssertion
		open   *tetherv1.Open
		agent  string
		wantOK bool
	}{
		{"the request signed", signed("limit=5"), open("GET", "/api/v1/pods", "limit=5"), "dev", true},
		{"another cluster's agent", signed("limit=5"), open("GET", "/api/v1/pods", "limit=5"), "prod", false},
		{"another request", signed("limit=5"), &tetherv1.Open{RequestId: "r2", ClusterId: "dev", Method: "GET", Path: "/api/v1/pods", Query: "limit=5"}, "dev", false},
		{"another method", signed("limit=5"), open("DELETE", "/api/v1/pods", "limit=5"), "dev", false},
		{"another path", signed("limit=5"), open("GET", "/api/v1/secrets", "limit=5"), "dev", false},
		{"another query", signed("dryRun=All"), open("GET", "/api/v1/pods", ""), "dev", false},
		{"a watch resumed", signed(watch), open("GET", "/api/v1/pods", "allowWatchBookmarks=true&labelSelector=app%3Dweb&resourceVersion=42&timeoutSeconds=120&watch=true"), "dev", true},
		{"a watch resumed for longer", signed(watch), open("GET", "/api/v1/pods", "allowWatchBookmarks=true&labelSelector=app%3Dweb&resourceVersion=42&timeoutSeconds=900&watch=true"), "dev", false},
		{"a watch resumed with another selector", signed(watch), open("GET", "/api/v1/pods", "labelSelector=app%3Ddb&resourceVersion=42&watch=true&timeoutSeconds=120&allowWatchBookmarks=true"), "dev", false},
		{"a list turned into a watch", signed("limit=5"), open("GET", "/api/v1/pods", "limit=5&watch=true"), "dev", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Bind(tt.a, tt.open, tt.agent)
			if tt.wantOK != (err == nil) {
				t.Fatalf("Bind = %v, want ok %v", err, tt.wantOK)
			}
		})
	}
}

func TestNoMACWithoutAnAgreementKey(t *testing.T) {
	root := newRoot(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := root.Certify(pub, nil, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(priv, cert)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier(root.Public())
	si, err := s.SignFor(assertionAt(time.Now(), time.Minute), v.AgentKey())
	if err != nil || len(si.Mac) != 0 {
		t.Fatalf("a gateway whose certificate names no agreement key made a MAC (%v)", err)
	}
	if _, err := v.Verify(si, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A certificate naming another agreement key than the gateway's own.
	cert, _ = root.Certify(pub, v.AgentKey(), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if _, err := NewSigner(priv, cert); err == nil {
		t.Fatal("a signer took a certificate with another agreement key")
	}
}

// benchKeys is a gateway's signer and an agent's verifier under one root,
// and the request they are for.
func benchKeys() (*Signer, *Verifier, *tetherv1.Open) {
	_, rootKey, _ := ed25519.GenerateKey(rand.Reader)
	root, _ := NewRoot(rootKey)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	cert, _ := root.Certify(pub, AgreementPublic(priv), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	s, _ := NewSigner(priv, cert)
	v, _ := NewVerifier(root.Public())
	return s, v, &tetherv1.Open{RequestId: "r1", ClusterId: "dev", Method: "GET", Path: "/api/v1/pods", Query: "limit=5"}
}

// benchSignAndCheck signs for agent (nil: by signature only) and checks.
func benchSignAndCheck(b *testing.B, s *Signer, v *Verifier, open *tetherv1.Open, agent []byte) {
	now := time.Now()
	for b.Loop() {
		si, err := s.SignFor(assertionAt(now, time.Minute), agent)
		if err != nil {
			b.Fatal(err)
		}
		a, err := v.Verify(si, now)
		if err != nil {
			b.Fatal(err)
		}
		if err := Bind(a, open, "dev"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignAndVerify(b *testing.B) {
	s, v, open := benchKeys()
	benchSignAndCheck(b, s, v, open, nil)
}

// The steady state: the gateway knows the agent's key.
func BenchmarkSignForAndCheckMAC(b *testing.B) {
	s, v, open := benchKeys()
	benchSignAndCheck(b, s, v, open, v.AgentKey())
	if n, _ := v.Checks(); n == 0 {
		b.Fatal("no identity was checked by its MAC")
	}
}
