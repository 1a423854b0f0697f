package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/tether-dev/tether/dev/stack"
)

// identityResult is one way of naming the user to the kube-apiserver,
// measured straight against it.
type identityResult struct {
	name   string
	groups int
	seq    samples
	con    throughput
	// apiCPU is the kube-apiserver's CPU per request at 64 concurrent.
	apiCPU time.Duration
}

// Group names as long as an identity provider's usually are.
func benchGroups(n int) []string {
	out := []string{"bench:readers"}
	for i := 1; i < n; i++ {
		out = append(out, fmt.Sprintf("bench:team-%03d-of-the-organization", i))
	}
	return out
}

// identityModes measures what naming the user costs the kube-apiserver
// itself, without Tether: impersonation, as Tether's agent does by
// default (a service account allowed to impersonate, not system:masters,
// whose requests skip authorization), against front-proxy authentication
// (--identity-mode=front-proxy: the front proxy's client certificate and
// X-Remote-* headers), each with 1 and with 300 groups, beside the
// service account's own requests. The same GET each time, allowed to the
// user by a group binding to view.
func identityModes(ctx context.Context, c config, s *stack.Stack, admin *target) ([]*identityResult, error) {
	saToken, err := impersonator(ctx, admin)
	if err != nil {
		return nil, err
	}
	plain, err := newClient(s.Kube.CAFile)
	if err != nil {
		return nil, err
	}
	fp, err := newClient(s.Kube.CAFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(s.Kube.FrontProxyCert, s.Kube.FrontProxyKey)
	if err != nil {
		return nil, fmt.Errorf("front-proxy certificate: %w", err)
	}
	fp.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}

	type mode struct {
		r *identityResult
		t *target
	}
	modes := []mode{{&identityResult{name: "the service account as itself"}, &target{name: "sa", base: s.Kube.URL, token: saToken, client: plain}}}
	for _, n := range []int{1, 300} {
		imp := http.Header{"Impersonate-User": {"bench-user"}, "Impersonate-Group": benchGroups(n)}
		front := http.Header{"X-Remote-User": {"bench-user"}, "X-Remote-Group": benchGroups(n)}
		modes = append(modes,
			mode{&identityResult{name: "impersonation", groups: n}, &target{name: fmt.Sprintf("impersonate-%d", n), base: s.Kube.URL, token: saToken, header: imp, client: plain}},
			mode{&identityResult{name: "front proxy", groups: n}, &target{name: fmt.Sprintf("front-proxy-%d", n), base: s.Kube.URL, header: front, client: fp}},
		)
	}
	for _, m := range modes {
		if _, _, err := m.t.get(ctx, smallPath, nil); err != nil {
			return nil, fmt.Errorf("identity modes: %s: %w", m.r.name, err)
		}
		sequential(ctx, m.t, smallPath, c.warm/2)
	}
	per := c.seqN / c.rounds / 2
	for round := range c.rounds {
		for _, m := range modes {
			logf("identity modes: round %d/%d, %s with %d groups (%d requests)", round+1, c.rounds, m.r.name, m.r.groups, per)
			m.r.seq.merge(sequential(ctx, m.t, smallPath, per))
		}
	}
	for _, m := range modes {
		meter := startCPU()
		m.r.con = concurrent(ctx, m.t, smallPath, c.workers, c.duration/2)
		cpu, _ := meter.stop()
		if n := len(m.r.con.lat.d); n > 0 {
			m.r.apiCPU = cpu["kube-apiserver"] / time.Duration(n)
		}
		logf("identity modes: %s with %d groups: %.0f requests/s at %d concurrent, %d errors", m.r.name, m.r.groups, m.r.con.rps(), c.workers, m.r.con.lat.errors)
	}
	out := make([]*identityResult, len(modes))
	for i, m := range modes {
		out[i] = m.r
	}
	return out, ctx.Err()
}

// impersonator makes a service account that may impersonate users,
// groups, uids and extras, as the chart's agent may, and a group that may
// read, with the service account in it too, and returns a token of the
// service account.
func impersonator(ctx context.Context, admin *target) (string, error) {
	for _, obj := range []struct{ path, body string }{
		{"/api/v1/namespaces/default/serviceaccounts", `{"metadata":{"name":"bench-impersonator"}}`},
		{"/apis/rbac.authorization.k8s.io/v1/clusterroles", `{"metadata":{"name":"bench-impersonator"},"rules":[
			{"apiGroups":[""],"resources":["users","groups","serviceaccounts"],"verbs":["impersonate"]},
			{"apiGroups":["authentication.k8s.io"],"resources":["uids","userextras/*"],"verbs":["impersonate"]}]}`},
		{"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", `{"metadata":{"name":"bench-impersonator"},
			"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"bench-impersonator"},
			"subjects":[{"kind":"ServiceAccount","name":"bench-impersonator","namespace":"default"}]}`},
		{"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", `{"metadata":{"name":"bench-readers"},
			"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},
			"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"bench:readers"},
				{"kind":"ServiceAccount","name":"bench-impersonator","namespace":"default"}]}`},
	} {
		code, body, err := admin.send(ctx, http.MethodPost, obj.path, obj.body)
		if err != nil {
			return "", err
		}
		if code != http.StatusCreated && code != http.StatusConflict {
			return "", fmt.Errorf("identity modes: POST %s: %d %s", obj.path, code, body)
		}
	}
	code, body, err := admin.send(ctx, http.MethodPost, "/api/v1/namespaces/default/serviceaccounts/bench-impersonator/token",
		`{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}`)
	if err != nil {
		return "", err
	}
	var tr struct {
		Status struct{ Token string }
	}
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &tr) != nil || tr.Status.Token == "" {
		return "", fmt.Errorf("identity modes: token request: %d %.200s", code, body)
	}
	return tr.Status.Token, nil
}

func identityReport(r *results, modes []*identityResult) string {
	var b strings.Builder
	header(&b, "Identity modes: what naming the user costs the kube-apiserver", r)
	c := r.cfg
	fmt.Fprintf(&b, "- Straight to the kube-apiserver, without Tether, over HTTP/2 and TLS; everything on the same %d cores\n", runtime.NumCPU())
	b.WriteString("- The same small GET (`" + smallPath + "`), allowed to the user `bench-user` by a binding of its group `bench:readers` to `view` (the service account's own row: by the same binding); the other groups are names of 33 bytes\n\n")
	b.WriteString("Impersonation is Tether's agent's default: its service account (here `bench-impersonator`, allowed to impersonate users, groups, uids and extras, and nothing else) sends `Impersonate-User` and `Impersonate-Group`, and the kube-apiserver authorizes the impersonation of the user and of each group on every request before it authorizes the request itself. Front proxy is `--identity-mode=front-proxy`: the front proxy's client certificate (signed by `--requestheader-client-ca-file`, its name in `--requestheader-allowed-names`) and `X-Remote-User` and `X-Remote-Group`, which the kube-apiserver takes as authenticated.\n\n")
	var base *identityResult
	for _, m := range modes {
		if m.groups == 0 {
			base = m
		}
	}
	b.WriteString("| How the user is named | Groups | p50, one at a time (ms) | vs the service account as itself | Requests/s, " + fmt.Sprint(c.workers) + " concurrent | kube-apiserver CPU per request (ms) | Failed |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, m := range modes {
		groups, vs := "—", ""
		if m.groups > 0 {
			groups = fmt.Sprint(m.groups)
		}
		if base != nil && m != base {
			vs = fmt.Sprintf("%+.3f ms", float64(m.seq.pct(0.5)-base.seq.pct(0.5))/float64(time.Millisecond))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.0f | %s | %d |\n", m.name, groups, ms(m.seq.pct(0.5)), vs, m.con.rps(), ms(m.apiCPU), m.seq.errors+m.con.lat.errors)
	}
	fmt.Fprintf(&b, "\nOne at a time: %d requests per row in %d interleaved rounds, after %d to warm up. Concurrent: %d workers for %v per row, one row after the other; CPU from /proc over that phase.\n", c.seqN/2, c.rounds, c.warm/2, c.workers, c.duration/2)
	return b.String()
}
