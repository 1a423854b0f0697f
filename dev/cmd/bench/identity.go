package main

import (
	"errors"
	"time"

	"github.com/tether-dev/tether/lib/assertion"
	"github.com/tether-dev/tether/lib/assertion/assertiontest"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// targetIdentityP50 is what signing at the gateway and checking at the
// agent may add to a request together, at the median (issue 13).
const targetIdentityP50 = 0.03

// identityCost times what the signed identity costs per request (ADR
// 011): the gateway's signature with the MAC for the cluster's agent, and
// the agent's check of that MAC and binding to the request, each one at a
// time, on an identity like a tenant user's (five groups, a credential-id
// extra); and the agent's check of the signature alone (verifySig), as for
// a cluster's first request through a gateway, before it knows the agent's
// key. Measured in this process after the stack stopped, so nothing else
// competes for the cores.
func identityCost(n int) (sign, verify, verifySig samples, err error) {
	signer, verifier, err := assertiontest.New()
	if err != nil {
		return sign, verify, verifySig, err
	}
	open := &tetherv1.Open{RequestId: "0123456789abcdef0123456789abcdef", ClusterId: "dev", Method: "GET",
		Path: "/api/v1/namespaces/default/configmaps/bench", Query: "resourceVersion=0"}
	id := &tetherv1.Identity{User: "alice@acme.example", Uid: "4f1c2a", Groups: []string{"acme:developers", "acme:oncall", "acme:eu", "acme:ops", "acme:readers"},
		Extra: map[string]*tetherv1.Values{"authentication.kubernetes.io/credential-id": {Values: []string{"JTI=0123456789"}}}}
	check := func(si *tetherv1.SignedIdentity, now time.Time) error {
		a, err := verifier.Verify(si, now)
		if err == nil {
			err = assertion.Bind(a, open, "dev")
		}
		return err
	}
	for range n {
		now := time.Now()
		start := time.Now()
		si, err := signer.SignFor(&tetherv1.IdentityAssertion{Identity: id, Tenants: []string{"acme"}, ClusterId: open.ClusterId,
			RequestId: open.RequestId, Method: open.Method, Path: open.Path, Query: open.Query,
			IssuedUnixMilli: now.UnixMilli(), ExpiresUnixMilli: now.Add(time.Minute).UnixMilli(), Issuer: "gateway-0"}, verifier.AgentKey())
		if err == nil && len(si.Mac) == 0 {
			err = errors.New("no MAC for the agent's key")
		}
		sign.add(time.Since(start), err)
		// The check runs before its time is taken: arguments are
		// evaluated in order.
		start = time.Now()
		err = check(si, now)
		verify.add(time.Since(start), err)
		if si != nil {
			si.Mac, si.MacKey = nil, nil
			start = time.Now()
			err = check(si, now)
			verifySig.add(time.Since(start), err)
		}
	}
	return sign, verify, verifySig, nil
}
