package agent

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/kstatus"
)

// AccessReviews asks the kube-apiserver whether a user may do something:
// client-go's SubjectAccessReviewInterface.
type AccessReviews interface {
	Create(ctx context.Context, r *authorizationv1.SubjectAccessReview, opts metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)
}

// maxImpersonated bounds the reviews one request may cost: a user, a uid
// and this many groups and extra values together.
const maxImpersonated = 64

// impersonation is one thing a user asks to be, as the kube-apiserver's
// impersonation filter checks it.
type impersonation struct {
	group, resource, subresource, namespace, name string
}

func (i impersonation) scope() string {
	if i.namespace != "" {
		return fmt.Sprintf("in the namespace %q", i.namespace)
	}
	return "at the cluster scope"
}

// impersonations are the checks for acting as as, in the kube-apiserver's
// order: the user (a service account is one in its namespace), the uid,
// each group, each extra value.
func impersonations(as *tetherv1.Identity) []impersonation {
	var out []impersonation
	if ns, name, ok := serviceAccount(as.GetUser()); ok {
		out = append(out, impersonation{resource: "serviceaccounts", namespace: ns, name: name})
	} else {
		out = append(out, impersonation{resource: "users", name: as.GetUser()})
	}
	if as.GetUid() != "" {
		out = append(out, impersonation{group: "authentication.k8s.io", resource: "uids", name: as.GetUid()})
	}
	for _, g := range as.GetGroups() {
		out = append(out, impersonation{resource: "groups", name: g})
	}
	keys := make([]string, 0, len(as.GetExtra()))
	for k := range as.GetExtra() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range as.GetExtra()[k].GetValues() {
			out = append(out, impersonation{group: "authentication.k8s.io", resource: "userextras", subresource: k, name: v})
		}
	}
	return out
}

// serviceAccount splits system:serviceaccount:NS:NAME.
func serviceAccount(user string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	return ns, name, ok && ns != "" && name != "" && !strings.Contains(name, ":")
}

// mayImpersonate asks the cluster, one SubjectAccessReview per part,
// whether user may act as as, as the kube-apiserver does for kubectl --as
// sent to it directly: nil if it may, else the Status the kube-apiserver
// would answer.
func (a *Agent) mayImpersonate(ctx context.Context, user, as *tetherv1.Identity) *kstatus.Status {
	checks := impersonations(as)
	if len(checks) > 2+maxImpersonated {
		st := kstatus.New(http.StatusBadRequest, fmt.Sprintf("impersonating %d groups and extras at once; at most %d through Tether", len(checks)-2, maxImpersonated))
		return &st
	}
	if a.cfg.AccessReviews == nil {
		st := kstatus.New(http.StatusForbidden, fmt.Sprintf("the Tether agent of cluster %q cannot check impersonation (no SubjectAccessReview client)", a.cfg.ClusterID))
		return &st
	}
	extra := make(map[string]authorizationv1.ExtraValue, len(user.GetExtra()))
	for k, v := range user.GetExtra() {
		extra[k] = v.GetValues()
	}
	for _, c := range checks {
		review, err := a.cfg.AccessReviews.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user.GetUser(), UID: user.GetUid(), Groups: user.GetGroups(), Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: "impersonate", Group: c.group, Resource: c.resource, Subresource: c.subresource, Namespace: c.namespace, Name: c.name,
			},
		}}, metav1.CreateOptions{})
		if err != nil {
			st := kstatus.New(http.StatusServiceUnavailable, fmt.Sprintf("the Tether agent of cluster %q could not check impersonation with the kube-apiserver: %v", a.cfg.ClusterID, err))
			return &st
		}
		if !review.Status.Allowed {
			// Worded as the kube-apiserver's impersonation filter words it.
			msg := fmt.Sprintf("%s %q is forbidden: User %q cannot impersonate resource %q in API group %q %s",
				groupResource(c), c.name, user.GetUser(), resourceName(c), c.group, c.scope())
			if review.Status.Reason != "" {
				msg += ": " + review.Status.Reason
			}
			st := kstatus.New(http.StatusForbidden, msg)
			return &st
		}
	}
	return nil
}

// groupResource is how the kube-apiserver names what was forbidden:
// resource.group, without the subresource.
func groupResource(c impersonation) string {
	if c.group != "" {
		return c.resource + "." + c.group
	}
	return c.resource
}

func resourceName(c impersonation) string {
	if c.subresource != "" {
		return c.resource + "/" + c.subresource
	}
	return c.resource
}
