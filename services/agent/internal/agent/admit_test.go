package agent

import (
	"net/http"
	"testing"
	"time"

	"github.com/tether-dev/tether/lib/assertion"
	"github.com/tether-dev/tether/lib/assertion/assertiontest"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// newIdentityKeys is a gateway's signer and an agent's verifier under one
// new identity root.
func newIdentityKeys(t *testing.T) (*assertion.Signer, *assertion.Verifier) {
	return assertiontest.Keys(t)
}

func TestAdmit(t *testing.T) {
	signer, verifier := newIdentityKeys(t)
	now := time.Now()
	at := now          // when open signs
	var handoff uint32 // the router the gateway handed the request to
	// open is a request signed as the gateway would, changed by change
	// after signing (what a hop behind the gateway could do).
	open := func(id string, attempt uint32, groups []string, tenants []string, change func(*tetherv1.Open)) *tetherv1.Open {
		o := &tetherv1.Open{RequestId: id, ClusterId: "dev", Method: "GET", Path: "/api/v1/pods", Attempt: attempt}
		si, err := signer.Sign(&tetherv1.IdentityAssertion{
			Identity: &tetherv1.Identity{User: "alice", Groups: groups}, Tenants: tenants,
			ClusterId: o.ClusterId, RequestId: o.RequestId, Method: o.Method, Path: o.Path,
			IssuedUnixMilli: at.UnixMilli(), ExpiresUnixMilli: at.Add(time.Minute).UnixMilli(),
			Handoff: handoff,
		})
		if err != nil {
			t.Fatal(err)
		}
		o.SignedIdentity = si
		if change != nil {
			change(o)
		}
		return o
	}
	acme := []string{"acme"}
	handedOff := func(id string, to, attempt uint32) *tetherv1.Open {
		handoff = to
		defer func() { handoff = 0 }()
		return open(id, attempt, nil, acme, nil)
	}
	ad, err := newAdmission(Admission{Verifier: verifier, Tenant: "acme", AllowSystem: []string{"system:break-glass"}, MaxEntries: 5}, "dev")
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		open   *tetherv1.Open
		reason string // "": admitted
		code   int
	}{
		{"signed for this request", open("r1", 0, []string{"devs", everyone}, acme, nil), "", 0},
		{"the same try again", open("r1", 0, []string{"devs"}, acme, nil), "replayed", http.StatusForbidden},
		{"the router's next try", open("r1", 1, []string{"devs"}, acme, nil), "", 0},
		{"a try past any router's", open("r1", maxAttempts, []string{"devs"}, acme, nil), "replayed", http.StatusForbidden},
		{"handed to the next router, signed again", handedOff("r1", 1, 0), "", 0},
		{"that router's try again", handedOff("r1", 1, 0), "replayed", http.StatusForbidden},
		{"that router's next try", handedOff("r1", 1, 1), "", 0},
		{"unsigned", open("r2", 0, nil, acme, func(o *tetherv1.Open) { o.SignedIdentity = nil }), "identity", http.StatusForbidden},
		{"moved to another path", open("r3", 0, nil, acme, func(o *tetherv1.Open) { o.Path = "/api/v1/secrets" }), "identity", http.StatusForbidden},
		{"another tenant's user", open("r4", 0, nil, []string{"globex"}, nil), "tenant", http.StatusForbidden},
		{"system:masters", open("r5", 0, []string{"system:masters"}, acme, nil), "system_name", http.StatusForbidden},
		{"an allowed break-glass group", open("r6", 0, []string{"system:break-glass"}, acme, nil), "", 0},
		// r1, its second hand-off, r5 and r6 are remembered (r2, r3, r4
		// failed before), and one more fills MaxEntries: past it a request waits its turn
		// rather than be forgotten while it could be replayed.
		{"fills the memory", open("r7", 0, nil, acme, nil), "", 0},
		{"past the memory", open("r8", 0, nil, acme, nil), "capacity", http.StatusServiceUnavailable},
	}
	for _, st := range steps {
		a, refused := ad.admit(st.open, now)
		switch {
		case st.reason == "" && refused != nil:
			t.Fatalf("%s: refused: %s", st.name, refused.status.Message)
		case st.reason == "" && a.GetIdentity().GetUser() != "alice":
			t.Fatalf("%s: admitted as %v", st.name, a.GetIdentity())
		case st.reason != "" && refused == nil:
			t.Fatalf("%s: admitted, want %s", st.name, st.reason)
		case st.reason != "" && (refused.reason != st.reason || refused.status.Code != st.code):
			t.Fatalf("%s: refused for %s with %d (%s), want %s with %d", st.name, refused.reason, refused.status.Code, refused.status.Message, st.reason, st.code)
		}
	}
	// Once their signatures expire, the ids are forgotten and there is
	// room again.
	at = now.Add(2 * time.Minute)
	if _, refused := ad.admit(open("r8", 0, nil, acme, nil), at); refused != nil || ad.len() != 1 {
		t.Fatalf("after expiry: %v, %d remembered", refused, ad.len())
	}
}

func TestAdmissionNeedsAVerifierAndATenant(t *testing.T) {
	_, v := newIdentityKeys(t)
	for _, cfg := range []Admission{{}, {Verifier: v}, {Tenant: "acme"}, {Verifier: v, Tenant: "acme", AllowSystem: []string{"admins"}}} {
		if _, err := newAdmission(cfg, "dev"); err == nil {
			t.Errorf("newAdmission(%+v) took it", cfg)
		}
	}
}
