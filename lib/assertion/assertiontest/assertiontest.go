// Package assertiontest makes identity keys for tests and benchmarks: a
// gateway's signer and an agent's verifier under one new identity root.
package assertiontest

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/tether-dev/tether/lib/assertion"
)

// New is a gateway key certified for the hour around now by a new root,
// and a verifier that trusts that root.
func New() (*assertion.Signer, *assertion.Verifier, error) {
	_, rootKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	root, err := assertion.NewRoot(rootKey)
	if err != nil {
		return nil, nil, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cert, err := root.Certify(pub, assertion.AgreementPublic(priv), time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		return nil, nil, err
	}
	signer, err := assertion.NewSigner(priv, cert)
	if err != nil {
		return nil, nil, err
	}
	verifier, err := assertion.NewVerifier(root.Public())
	if err != nil {
		return nil, nil, err
	}
	return signer, verifier, nil
}

// Keys is New for a test, which it fails on error.
func Keys(tb testing.TB) (*assertion.Signer, *assertion.Verifier) {
	tb.Helper()
	s, v, err := New()
	if err != nil {
		tb.Fatal(err)
	}
	return s, v
}
