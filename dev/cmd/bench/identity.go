package main

import (
	"time"

	"github.com/tether-dev/tether/lib/assertion"
	"github.com/tether-dev/tether/lib/assertion/assertiontest"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// targetIdentityP50 is what signing at the gateway and checking at the
// agent may add to a request together, at the median (issue 13).
const targetIdentityP50 = 0.03

// identityCost times what the signed identity costs per request (ADR
// 011): the gateway's signature, and the agent's verification and binding
// to the request, each one at a time, on an identity like a tenant user's
// (five groups, a credential-id extra). Measured in this process after the
// stack stopped, so nothing else competes for the cores.
func identityCost(n int) (sign, verify samples, err error) {
	signer, verifier, err := assertiontest.New()
	if err != nil {
		return sign, verify, err
	}
	open := &tetherv1.Open{RequestId: "0123456789abcdef0123456789abcdef", ClusterId: "dev", Method: "GET",
		Path: "/api/v1/namespaces/default/configmaps/bench", Query: "resourceVersion=0"}
	id := &tetherv1.Identity{User: "alice@acme.example", Uid: "4f1c2a", Groups: []string{"acme:developers", "acme:oncall", "acme:eu", "acme:ops", "acme:readers"},
		Extra: map[string]*tetherv1.Values{"authentication.kubernetes.io/credential-id": {Values: []string{"JTI=0123456789"}}}}
	for range n {
		now := time.Now()
		start := time.Now()
		si, err := signer.Sign(&tetherv1.IdentityAssertion{Identity: id, Tenants: []string{"acme"}, ClusterId: open.ClusterId,
			RequestId: open.RequestId, Method: open.Method, Path: open.Path, Query: open.Query,
			IssuedUnixMilli: now.UnixMilli(), ExpiresUnixMilli: now.Add(time.Minute).UnixMilli(), Issuer: "gateway-0"})
		sign.add(time.Since(start), err)
		start = time.Now()
		a, err := verifier.Verify(si, now)
		if err == nil {
			err = assertion.Bind(a, open, "dev")
		}
		verify.add(time.Since(start), err)
	}
	return sign, verify, nil
}
