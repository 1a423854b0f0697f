package tunnel

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// hopByHop are the headers of one HTTP connection (RFC 9110 section 7.6.1):
// every hop sets its own.
var hopByHop = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
}

// Credential reports whether a client-sent header would claim an identity.
// Only the agent, from the identity in the envelope, may set these toward a
// cluster.
func Credential(name string) bool {
	name = textproto.CanonicalMIMEHeaderKey(name)
	return name == "Authorization" || strings.HasPrefix(name, "Impersonate-")
}

// Upgrade returns the protocols an HTTP/1.1 message asks to switch to (its
// Upgrade header), or "" unless its Connection header names "upgrade" too:
// an Upgrade header alone is not a request to switch.
func Upgrade(h http.Header) string {
	up := strings.Join(h.Values("Upgrade"), ", ")
	if up == "" {
		return ""
	}
	for _, v := range h.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return up
			}
		}
	}
	return ""
}

// SetUpgrade adds the connection-level headers of an upgrade to h, which
// FromHTTP and ToHTTP never carry.
func SetUpgrade(h http.Header, protocols string) {
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", protocols)
}

// wsTokenPrefix marks a bearer token among a WebSocket client's
// subprotocols, where browsers put what they cannot send as Authorization.
// The kube-apiserver authenticates with it, so it is a credential too.
const wsTokenPrefix = "base64url.bearer.authorization.k8s.io."

// ScrubCredentials removes from h everything that would claim an identity:
// the headers Credential names, and bearer tokens hidden among WebSocket
// subprotocols.
func ScrubCredentials(h http.Header) {
	for name := range h {
		if Credential(name) {
			delete(h, name)
		}
	}
	const wsp = "Sec-Websocket-Protocol"
	protocols := h.Values(wsp)
	if len(protocols) == 0 {
		return
	}
	var kept []string
	for _, v := range protocols {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" && !strings.HasPrefix(p, wsTokenPrefix) {
				kept = append(kept, p)
			}
		}
	}
	h.Del(wsp)
	if len(kept) > 0 {
		h.Set(wsp, strings.Join(kept, ", "))
	}
}

// FromHTTP converts h to frame headers, leaving out hop-by-hop headers,
// those that Connection names, and those that drop reports.
func FromHTTP(h http.Header, drop func(canonicalName string) bool) []*tetherv1.Header {
	named := map[string]bool{}
	for _, v := range h.Values("Connection") {
		for _, n := range strings.Split(v, ",") {
			named[textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(n))] = true
		}
	}
	out := make([]*tetherv1.Header, 0, len(h))
	for name, values := range h {
		name = textproto.CanonicalMIMEHeaderKey(name)
		if hopByHop[name] || named[name] || (drop != nil && drop(name)) {
			continue
		}
		out = append(out, &tetherv1.Header{Name: name, Values: values})
	}
	return out
}

// ToHTTP adds frame headers to h, again without hop-by-hop headers.
func ToHTTP(hs []*tetherv1.Header, h http.Header, drop func(canonicalName string) bool) {
	for _, hd := range hs {
		name := textproto.CanonicalMIMEHeaderKey(hd.Name)
		if hopByHop[name] || (drop != nil && drop(name)) {
			continue
		}
		h[name] = append(h[name], hd.Values...)
	}
}

// Streams reports whether a request's response lasts for as long as the
// client keeps it: a watch (watch=true, or the old /watch/ paths) or a
// followed log (follow=true). Every hop decides the same way: the gateway
// for its limits, the router for resuming, the agent for sending a small
// answer whole.
func Streams(query url.Values, path string) bool {
	for _, name := range []string{"watch", "follow"} {
		if v := strings.ToLower(query.Get(name)); v == "true" || v == "1" {
			return true
		}
	}
	return strings.Contains(path, "/watch/")
}
