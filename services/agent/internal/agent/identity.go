package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// caller is whom a request runs as: the user a gateway signed for, and
// whom they asked to act as (kubectl --as), if anyone.
type caller struct {
	user, as *tetherv1.Identity
}

// effective is the identity the cluster authorizes the request as.
func (c caller) effective() *tetherv1.Identity {
	if c.as != nil {
		return c.as
	}
	return c.user
}

// FrontProxy is the kube-apiserver's front-proxy authentication
// (--requestheader-*), the way the kube-apiserver itself calls aggregated
// API servers. The agent's APITransport presents a client certificate that
// the kube-apiserver's --requestheader-client-ca-file trusts, under a name
// in --requestheader-allowed-names, and the user travels in these headers.
// The kube-apiserver then takes the user as authenticated, where
// impersonation makes it authorize the agent to impersonate the user, each
// group and each extra value on every request (ADR 017).
type FrontProxy struct {
	// UserHeaders, UIDHeaders and GroupHeaders are the headers the
	// kube-apiserver reads (--requestheader-username-headers,
	// -uid-headers, -group-headers) and ExtraPrefixes those that start
	// extra values (--requestheader-extra-headers-prefix). Every one is
	// dropped from what a client sent: the kube-apiserver takes the first
	// user header it finds and the groups of all. The first of each list
	// carries the user; UIDHeaders may be empty.
	UserHeaders, UIDHeaders, GroupHeaders, ExtraPrefixes []string
}

// DefaultFrontProxy has the names the Kubernetes documentation suggests,
// which kubeadm and managed control planes configure: a new value each
// call, so no caller can change another's.
func DefaultFrontProxy() FrontProxy {
	return FrontProxy{UserHeaders: []string{"X-Remote-User"}, UIDHeaders: []string{"X-Remote-Uid"}, GroupHeaders: []string{"X-Remote-Group"}, ExtraPrefixes: []string{"X-Remote-Extra-"}}
}

func (f *FrontProxy) validate() error {
	if len(f.UserHeaders) == 0 || len(f.GroupHeaders) == 0 || len(f.ExtraPrefixes) == 0 {
		return errors.New("front-proxy authentication needs a user header, a group header and an extra prefix")
	}
	for _, list := range [][]string{f.UserHeaders, f.UIDHeaders, f.GroupHeaders, f.ExtraPrefixes} {
		for _, h := range list {
			if !validHeaderName(strings.TrimSuffix(h, "-")) {
				return fmt.Errorf("%q is not a header name", h)
			}
		}
	}
	return nil
}

// claims reports whether a header of a client's named name could say who
// the user is to the kube-apiserver.
func (f *FrontProxy) claims(name string) bool {
	for _, list := range [][]string{f.UserHeaders, f.UIDHeaders, f.GroupHeaders} {
		for _, h := range list {
			if strings.EqualFold(name, h) {
				return true
			}
		}
	}
	for _, p := range f.ExtraPrefixes {
		if hasPrefixFold(name, p) {
			return true
		}
	}
	return false
}

// Merge adds o's names to f's: a front proxy drops what either lists.
// f's come first, so they carry the user.
func (f FrontProxy) Merge(o FrontProxy) FrontProxy {
	merge := func(a, b []string) []string {
		out := slices.Clone(a)
		for _, h := range b {
			if !slices.ContainsFunc(out, func(x string) bool { return strings.EqualFold(x, h) }) {
				out = append(out, h)
			}
		}
		return out
	}
	return FrontProxy{UserHeaders: merge(f.UserHeaders, o.UserHeaders), UIDHeaders: merge(f.UIDHeaders, o.UIDHeaders),
		GroupHeaders: merge(f.GroupHeaders, o.GroupHeaders), ExtraPrefixes: merge(f.ExtraPrefixes, o.ExtraPrefixes)}
}

func validHeaderName(h string) bool {
	for _, r := range h {
		if !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return h != ""
}

// remotePrefix starts the headers front-proxy authentication uses by
// convention; a client's are dropped whatever the agent's mode, so none
// ever reaches a kube-apiserver that reads them.
const remotePrefix = "X-Remote-"

// setIdentity drops every header of the client's that could name a user
// to the kube-apiserver (ScrubCredentials dropped Authorization and
// Impersonate-* already) and names who: as impersonation headers, or in
// front-proxy mode as the authenticated user, with whom they asked to act
// as in impersonation headers for the kube-apiserver to authorize.
func (a *Agent) setIdentity(h http.Header, who caller) error {
	fp := a.cfg.FrontProxy
	for name := range h {
		if hasPrefixFold(name, remotePrefix) || fp != nil && fp.claims(name) {
			delete(h, name)
		}
	}
	if who.user.GetUser() == "" || who.as != nil && who.as.GetUser() == "" {
		// Impersonate-User empty is no impersonation at all: the request
		// would run with the agent's own rights.
		return errors.New("request without an identity")
	}
	if fp == nil {
		impersonate(h, who.effective())
		return nil
	}
	id := who.user
	h.Set(fp.UserHeaders[0], id.User)
	if id.Uid != "" && len(fp.UIDHeaders) > 0 {
		h.Set(fp.UIDHeaders[0], id.Uid)
	}
	for _, g := range id.Groups {
		h.Add(fp.GroupHeaders[0], g)
	}
	for k, v := range id.Extra {
		for _, val := range v.GetValues() {
			// The kube-apiserver unescapes the key, as for Impersonate-Extra-.
			h.Add(fp.ExtraPrefixes[0]+url.PathEscape(k), val)
		}
	}
	if who.as != nil {
		impersonate(h, who.as)
	}
	return nil
}

// impersonate names id in impersonation headers.
func impersonate(h http.Header, id *tetherv1.Identity) {
	h.Set("Impersonate-User", id.User)
	if id.Uid != "" {
		h.Set("Impersonate-Uid", id.Uid)
	}
	for _, g := range id.Groups {
		h.Add("Impersonate-Group", g)
	}
	for k, v := range id.Extra {
		for _, val := range v.GetValues() {
			// Keys such as authentication.kubernetes.io/credential-id
			// are percent-encoded in the header name, as Kubernetes reads them.
			h.Add("Impersonate-Extra-"+url.PathEscape(k), val)
		}
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// ErrNoFrontProxy: the kube-apiserver takes no users in headers.
var ErrNoFrontProxy = errors.New("the kube-apiserver has no front-proxy authentication (--requestheader-client-ca-file and its headers)")

// FrontProxyOf reads the headers the kube-apiserver takes users from, as it
// publishes them for aggregated API servers: the ConfigMap
// kube-system/extension-apiserver-authentication (readable with the Role
// extension-apiserver-authentication-reader). rt carries the agent's own
// credentials.
func FrontProxyOf(ctx context.Context, rt http.RoundTripper, apiServer string) (FrontProxy, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(apiServer, "/")+"/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication", nil)
	if err != nil {
		return FrontProxy{}, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return FrontProxy{}, fmt.Errorf("reading the front-proxy configuration: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return FrontProxy{}, fmt.Errorf("reading the front-proxy configuration: %s", resp.Status)
	}
	var cm struct{ Data map[string]string }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&cm); err != nil {
		return FrontProxy{}, fmt.Errorf("reading the front-proxy configuration: %w", err)
	}
	list := func(key string) ([]string, error) {
		var out []string
		if v := cm.Data[key]; v != "" {
			if err := json.Unmarshal([]byte(v), &out); err != nil {
				return nil, fmt.Errorf("reading the front-proxy configuration: %s: %w", key, err)
			}
		}
		return out, nil
	}
	var fp FrontProxy
	for key, dst := range map[string]*[]string{
		"requestheader-username-headers": &fp.UserHeaders, "requestheader-uid-headers": &fp.UIDHeaders,
		"requestheader-group-headers": &fp.GroupHeaders, "requestheader-extra-headers-prefix": &fp.ExtraPrefixes,
	} {
		if *dst, err = list(key); err != nil {
			return FrontProxy{}, err
		}
	}
	if cm.Data["requestheader-client-ca-file"] == "" || len(fp.UserHeaders) == 0 {
		return FrontProxy{}, ErrNoFrontProxy
	}
	return fp, nil
}
