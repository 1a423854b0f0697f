package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/tether-dev/tether/lib/subject"
)

// ClusterHosts names clusters by host: {id}.{domain} for any of its base
// domains (ADR 009). The request's Host decides, not the TLS server name:
// it is sent with every request, survives a TLS-terminating load balancer,
// and stays right when a client reuses one connection for several hosts the
// wildcard certificate covers.
type ClusterHosts struct {
	// Longest first, so that of two nested domains the inner one wins.
	domains []string
}

// dnsName is a host name of lower-case letters, digits and hyphens.
var dnsName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`)

// NewClusterHosts validates the base domains (case is ignored; none is
// fine: clusters are then addressed by path only).
func NewClusterHosts(domains []string) (ClusterHosts, error) {
	var h ClusterHosts
	for _, d := range domains {
		d = strings.ToLower(strings.TrimSpace(d))
		if len(d) > 253-2 || !dnsName.MatchString(d) {
			return ClusterHosts{}, fmt.Errorf("gateway: cluster domain %q is not a DNS name", d)
		}
		if !slices.Contains(h.domains, d) {
			h.domains = append(h.domains, d)
		}
	}
	slices.SortFunc(h.domains, func(a, b string) int { return len(b) - len(a) })
	return h, nil
}

// errNotClusterHost: the host is not below a cluster domain, so the path
// names the cluster, as it always has.
var errNotClusterHost = errors.New("not a cluster host")

// Cluster is the cluster a Host header (host, host:port, either case, with
// or without the root's trailing dot) names. A host below a base domain
// that is not one valid cluster id there is errNotFound; a host that is not
// below any is errNotClusterHost.
func (h ClusterHosts) Cluster(host string) (string, error) {
	if len(h.domains) == 0 {
		return "", errNotClusterHost
	}
	name := host
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		port := host[i+1:]
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			// An IPv6 literal, or no host name at all.
			return "", errNotClusterHost
		}
		name = host[:i]
	}
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		// Only ASCII folds: strings.ToLower would turn the Kelvin sign
		// into a k, and a lookalike into some other cluster's name.
		if name[i] >= 0x80 {
			return "", errNotClusterHost
		}
	}
	name = strings.ToLower(name)
	if slices.Contains(h.domains, name) {
		// The gateway's own name, even when it is below another domain.
		return "", errNotClusterHost
	}
	for _, d := range h.domains {
		label, below := strings.CutSuffix(name, "."+d)
		if !below {
			continue
		}
		if !subject.ValidClusterID(label) {
			// Also a deeper name (a.b.domain): the wildcard covers one
			// label, and a cluster id is one.
			return "", errNotFound
		}
		return label, nil
	}
	return "", errNotClusterHost
}

// ByHost reports whether r is addressed to a cluster by its Host (to one
// cluster, or refused), so that its path names no cluster.
func (g *Gateway) ByHost(r *http.Request) bool {
	_, err := g.cfg.Hosts.Cluster(r.Host)
	return !errors.Is(err, errNotClusterHost)
}

// target is the cluster r is for and its Kubernetes path: from the Host
// when it names one, else from /clusters/{id}/ in the path.
func (g *Gateway) target(r *http.Request) (cluster, rest string, err error) {
	cluster, err = g.cfg.Hosts.Cluster(r.Host)
	switch {
	case errors.Is(err, errNotClusterHost):
		return ParsePath(r.URL.EscapedPath())
	case err != nil:
		return "", "", err
	}
	rest = r.URL.EscapedPath()
	if !strings.HasPrefix(rest, "/") {
		// OPTIONS * or CONNECT's authority: no Kubernetes path.
		return "", "", errNotFound
	}
	if err := checkSegments(rest); err != nil {
		return "", "", err
	}
	return cluster, rest, nil
}
