package assertion

import (
	"fmt"
	"net/url"
	"strconv"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// resumeKeys are the query parameters in which a watch the router resumes
// after a lost hop differs from the one the gateway signed: where it goes
// on from, and how long it has left.
var resumeKeys = []string{"resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds"}

// Bind checks that a verified assertion is for open, at the agent of
// cluster: the same cluster, request, method and path, and the same query,
// except that a watch may resume elsewhere and for no longer than signed.
func Bind(a *tetherv1.IdentityAssertion, open *tetherv1.Open, cluster string) error {
	switch {
	case a.GetClusterId() != cluster || open.GetClusterId() != cluster:
		return fmt.Errorf("%w: signed for cluster %q, not this one", ErrInvalid, a.GetClusterId())
	case a.GetRequestId() != open.GetRequestId():
		return fmt.Errorf("%w: signed for another request", ErrInvalid)
	case a.GetMethod() != open.GetMethod() || a.GetPath() != open.GetPath():
		return fmt.Errorf("%w: signed for %s %s, not this method and path", ErrInvalid, a.GetMethod(), a.GetPath())
	case a.GetQuery() == open.GetQuery():
		return nil
	}
	signed, err1 := url.ParseQuery(a.GetQuery())
	got, err2 := url.ParseQuery(open.GetQuery())
	if err1 != nil || err2 != nil || !isWatch(signed) || !isWatch(got) {
		return fmt.Errorf("%w: signed for another query", ErrInvalid)
	}
	if st := signed.Get("timeoutSeconds"); st != "" {
		s, err1 := strconv.ParseInt(st, 10, 64)
		g, err2 := strconv.ParseInt(got.Get("timeoutSeconds"), 10, 64)
		if err1 != nil || err2 != nil || g < 0 || g > s {
			return fmt.Errorf("%w: a resumed watch may not outlast the one signed", ErrInvalid)
		}
	}
	for _, k := range resumeKeys {
		signed.Del(k)
		got.Del(k)
	}
	if signed.Encode() != got.Encode() {
		return fmt.Errorf("%w: signed for another query", ErrInvalid)
	}
	return nil
}

func isWatch(q url.Values) bool {
	w := q.Get("watch")
	return w == "true" || w == "1"
}
