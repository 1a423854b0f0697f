package gateway

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// requestedImpersonation is whom a client asked to act as (kubectl --as,
// --as-group, --as-uid, or the headers by hand), read as the kube-apiserver
// reads it: Impersonate-User, Impersonate-Uid, Impersonate-Group and
// Impersonate-Extra-KEY (KEY lowercased, then percent-decoded). None asked:
// nil. Groups, a uid or extras without a user are refused, as the
// kube-apiserver refuses them. Whether the user may is the cluster's to
// say: the agent asks it (ADR 011).
func requestedImpersonation(h http.Header) (*tetherv1.Identity, error) {
	id := &tetherv1.Identity{User: h.Get("Impersonate-User"), Uid: h.Get("Impersonate-Uid"), Groups: h.Values("Impersonate-Group")}
	asked := id.User != "" || id.Uid != "" || len(id.Groups) > 0
	for name, vals := range h {
		key, ok := strings.CutPrefix(name, "Impersonate-Extra-")
		if !ok {
			continue
		}
		asked = true
		k, err := url.PathUnescape(strings.ToLower(key))
		if err != nil || k == "" {
			return nil, errors.New("an Impersonate-Extra- header with a key that is not percent-encoded")
		}
		if id.Extra == nil {
			id.Extra = map[string]*tetherv1.Values{}
		}
		id.Extra[k] = &tetherv1.Values{Values: append(id.Extra[k].GetValues(), vals...)}
	}
	switch {
	case !asked:
		return nil, nil
	case id.User == "":
		return nil, errors.New("requested impersonation of groups, a uid or extras without impersonating a user")
	}
	return id, nil
}
