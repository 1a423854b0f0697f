package agent

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
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
	// UserHeader, UIDHeader and GroupHeader name the headers the
	// kube-apiserver reads (--requestheader-username-headers, -uid-headers,
	// -group-headers); ExtraPrefix starts those of extra values
	// (--requestheader-extra-headers-prefix). UIDHeader may be empty.
	UserHeader, UIDHeader, GroupHeader, ExtraPrefix string
}

// DefaultFrontProxy has the names the Kubernetes documentation suggests,
// which kubeadm and managed control planes configure.
var DefaultFrontProxy = FrontProxy{UserHeader: "X-Remote-User", UIDHeader: "X-Remote-Uid", GroupHeader: "X-Remote-Group", ExtraPrefix: "X-Remote-Extra-"}

func (f *FrontProxy) validate() error {
	if f.UserHeader == "" || f.GroupHeader == "" || f.ExtraPrefix == "" {
		return errors.New("front-proxy authentication needs a user header, a group header and an extra prefix")
	}
	for _, h := range []string{f.UserHeader, f.UIDHeader, f.GroupHeader, strings.TrimSuffix(f.ExtraPrefix, "-")} {
		if h != "" && !validHeaderName(h) {
			return fmt.Errorf("%q is not a header name", h)
		}
	}
	return nil
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
		drop := hasPrefixFold(name, remotePrefix)
		if fp != nil {
			drop = drop || strings.EqualFold(name, fp.UserHeader) || strings.EqualFold(name, fp.GroupHeader) ||
				fp.UIDHeader != "" && strings.EqualFold(name, fp.UIDHeader) || hasPrefixFold(name, fp.ExtraPrefix)
		}
		if drop {
			delete(h, name)
		}
	}
	if who.user.GetUser() == "" {
		return errors.New("request without an identity")
	}
	if fp == nil {
		impersonate(h, who.effective())
		return nil
	}
	id := who.user
	h.Set(fp.UserHeader, id.User)
	if id.Uid != "" && fp.UIDHeader != "" {
		h.Set(fp.UIDHeader, id.Uid)
	}
	for _, g := range id.Groups {
		h.Add(fp.GroupHeader, g)
	}
	for k, v := range id.Extra {
		for _, val := range v.GetValues() {
			// The kube-apiserver unescapes the key, as for Impersonate-Extra-.
			h.Add(fp.ExtraPrefix+url.PathEscape(k), val)
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
