package callout

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"
)

// reviews answers as the kube-apiserver did for the tokens it knows; the
// real TokenReview path is dev/helmchart's TestNATSConfig.
type reviews map[string]Review

func (r reviews) Review(_ context.Context, token string) (Review, error) {
	if rev, ok := r[token]; ok {
		return rev, nil
	}
	return Review{}, refuse("invalid_token", "unknown token")
}

func newCallout(t *testing.T, roles ...Role) *Callout {
	t.Helper()
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Issuer: issuer, Roles: roles, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(),
		Reviews: reviews{
			"a.b.c": {Username: "system:serviceaccount:t:tether-router", Pod: "router-1"},
			"d.e.f": {Username: "system:serviceaccount:t:tether-router"},
			"g.h.i": {Username: "system:serviceaccount:t:other", Pod: "other-1"},
			"j.k.l": {Username: "system:serviceaccount:t:tether-router", Pod: "router.with.dots"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewRefusesBadRoles(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	issuer, _ := nkeys.CreateAccount()
	user, _ := nkeys.CreateUser()
	for name, tc := range map[string]struct {
		issuer nkeys.KeyPair
		roles  []Role
	}{
		"a user key as issuer":       {user, []Role{{Name: "a", PasswordHash: hash}}},
		"no name":                    {issuer, []Role{{PasswordHash: hash}}},
		"neither password nor token": {issuer, []Role{{Name: "a"}}},
		"both":                       {issuer, []Role{{Name: "a", PasswordHash: hash, ServiceAccount: "system:serviceaccount:t:a"}}},
		"not a service account":      {issuer, []Role{{Name: "a", ServiceAccount: "alice"}}},
		"plaintext password":         {issuer, []Role{{Name: "a", PasswordHash: []byte("pw")}}},
		"twice":                      {issuer, []Role{{Name: "a", PasswordHash: hash}, {Name: "a", PasswordHash: hash}}},
		"a subject with two spaces":  {issuer, []Role{{Name: "a", PasswordHash: hash, Subscribe: []string{"x q r"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(Config{Issuer: tc.issuer, Roles: tc.roles, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry(), Reviews: reviews{}})
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestAuthorize(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	c := newCallout(t,
		Role{Name: "agent-registry", PasswordHash: hash, Publish: []string{"tether.clusters.*"}, Subscribe: []string{"_INBOX_{user}.>"}, Responses: true},
		Role{Name: "router", ServiceAccount: "system:serviceaccount:t:tether-router", Publish: []string{"tether.req.*"},
			Subscribe: []string{"tether.rtr.{user}.>", "_INBOX_{user}.>"}},
		Role{Name: "audit", PasswordHash: hash},
	)
	userKey, _ := nkeys.CreateUser()
	pub, _ := userKey.PublicKey()
	for _, tc := range []struct {
		name, user, password string
		refusal              string // "" for a login
		name2                string
		sub, pubs            []string
	}{
		{name: "password", user: "agent-registry", password: "pw", name2: "agent-registry", sub: []string{"_INBOX_agent-registry.>"}, pubs: []string{"tether.clusters.*"}},
		{name: "a pod's token", user: "router-1", password: "a.b.c", name2: "router-1", sub: []string{"tether.rtr.router-1.>", "_INBOX_router-1.>"}, pubs: []string{"tether.req.*"}},
		{name: "allowed nothing", user: "audit", password: "pw", name2: "audit"},
		{name: "wrong password", user: "agent-registry", password: "nope", refusal: "bad_password"},
		{name: "no password", user: "agent-registry", refusal: "no_credentials"},
		{name: "unknown user", user: "mallory", password: "pw", refusal: "unknown_user"},
		{name: "another pod's token", user: "router-2", password: "a.b.c", refusal: "wrong_pod"},
		{name: "a token bound to no pod", user: "router-1", password: "d.e.f", refusal: "unbound_token"},
		{name: "an account without a role", user: "other-1", password: "g.h.i", refusal: "unknown_account"},
		{name: "a pod name no subject can hold", user: "router.with.dots", password: "j.k.l", refusal: "bad_name"},
		{name: "a token the cluster refuses", user: "router-1", password: "x.y.z", refusal: "invalid_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := jwt.NewAuthorizationRequestClaims(pub)
			req.UserNkey = pub
			req.ConnectOptions = jwt.ConnectOptions{Username: tc.user, Password: tc.password}
			token, err := c.Authorize(t.Context(), req)
			if tc.refusal != "" {
				if !errors.Is(err, ErrRefused) || reason(err) != tc.refusal {
					t.Fatalf("got %v (%s), want a refusal for %s", err, reason(err), tc.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			uc, err := jwt.DecodeUserClaims(token)
			if err != nil {
				t.Fatal(err)
			}
			if uc.Subject != pub || uc.Name != tc.name2 || uc.Audience != "$G" {
				t.Errorf("user %s named %q in %q", uc.Subject, uc.Name, uc.Audience)
			}
			wantSub, wantPub := []string(uc.Sub.Allow), []string(uc.Pub.Allow)
			if len(tc.sub) == 0 && !slices.Equal(uc.Sub.Deny, jwt.StringList{">"}) || !slices.Equal(wantSub, tc.sub) {
				t.Errorf("subscribe %v / deny %v, want %v", uc.Sub.Allow, uc.Sub.Deny, tc.sub)
			}
			if len(tc.pubs) == 0 && !slices.Equal(uc.Pub.Deny, jwt.StringList{">"}) || !slices.Equal(wantPub, tc.pubs) {
				t.Errorf("publish %v / deny %v, want %v", uc.Pub.Allow, uc.Pub.Deny, tc.pubs)
			}
		})
	}
}
