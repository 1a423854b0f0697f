package agentcred

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "k"), filepath.Join(dir, "k.pub")
	if err := WriteKeyPair(priv, pub); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := NewSigner(otherKey)
	now := time.Now()
	c := Claims{ClusterID: "x", ClusterUID: "u1", ID: NewID(), IssuedAt: now, Expires: now.Add(time.Hour)}
	good, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(good, now)
	if err != nil || got.ClusterID != "x" || got.ClusterUID != "u1" || got.ID != c.ID {
		t.Fatalf("Verify(good) = %+v, %v", got, err)
	}
	sign := func(s *Signer, c Claims) string {
		tok, err := s.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	parts := strings.Split(good, ".")
	// The claims of cluster y under cluster x's signature.
	swapped := c
	swapped.ClusterID = "y"
	other2 := strings.Split(sign(s, swapped), ".")
	tests := []struct {
		name  string
		token string
		at    time.Time
	}{
		{"expired", good, now.Add(time.Hour)},
		{"issued in the future", good, now.Add(-2 * time.Minute)},
		{"another key", sign(other, c), now},
		{"another key under our key id", strings.Join([]string{parts[0], parts[1], strings.Split(sign(other, c), ".")[2], strings.Split(sign(other, c), ".")[3]}, "."), now},
		{"claims swapped under a valid signature", strings.Join([]string{parts[0], parts[1], other2[2], parts[3]}, "."), now},
		{"no signature", strings.Join(parts[:3], ".") + ".", now},
		{"other version", "tac2" + good[4:], now},
		{"garbage claims", strings.Join([]string{parts[0], parts[1], base64.RawURLEncoding.EncodeToString([]byte("{")), parts[3]}, "."), now},
		{"oversized", good + strings.Repeat("A", MaxLen), now},
		{"empty", "", now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := v.Verify(tt.token, tt.at); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify = %+v, %v; want ErrInvalid", got, err)
			}
		})
	}
}

func TestSignValidates(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := NewSigner(key)
	now := time.Now()
	for _, c := range []Claims{
		{ClusterUID: "u", ID: "i", IssuedAt: now, Expires: now.Add(time.Hour)},
		{ClusterID: "x", ID: "i", IssuedAt: now, Expires: now.Add(time.Hour)},
		{ClusterID: "x", ClusterUID: "u", IssuedAt: now, Expires: now.Add(time.Hour)},
		{ClusterID: "x", ClusterUID: "u", ID: "i", IssuedAt: now, Expires: now},
	} {
		if _, err := s.Sign(c); err == nil {
			t.Fatalf("signed %+v", c)
		}
	}
}

// FuzzVerify: no input makes Verify panic or accept what nobody signed.
func FuzzVerify(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := NewSigner(key)
	v, _ := NewVerifier(s.Public())
	now := time.Now()
	good, _ := s.Sign(Claims{ClusterID: "x", ClusterUID: "u", ID: "i", IssuedAt: now, Expires: now.Add(time.Hour)})
	f.Add(good)
	f.Add("tac1.....")
	f.Add("tac1.0011223344556677.e30.")
	f.Fuzz(func(t *testing.T, token string) {
		if _, err := v.Verify(token, now); err == nil && token != good {
			t.Fatalf("accepted a token nobody signed: %q", token)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := NewSigner(key)
	v, _ := NewVerifier(s.Public())
	now := time.Now()
	tok, _ := s.Sign(Claims{ClusterID: "prod-eu-1", ClusterUID: "u", ID: NewID(), IssuedAt: now, Expires: now.Add(time.Hour)})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := NewSigner(key)
	now := time.Now()
	c := Claims{ClusterID: "prod-eu-1", ClusterUID: "u", ID: NewID(), IssuedAt: now, Expires: now.Add(time.Hour)}
	for b.Loop() {
		if _, err := s.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}
