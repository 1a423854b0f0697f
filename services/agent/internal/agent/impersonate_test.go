package agent

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// reviews answers SubjectAccessReviews from a list of what may be
// impersonated, and records what it was asked.
type reviews struct {
	allowed map[string]bool // "resource/subresource|namespace|name"
	asked   []authorizationv1.SubjectAccessReviewSpec
	err     error
}

func (r *reviews) Create(_ context.Context, sar *authorizationv1.SubjectAccessReview, _ metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	if r.err != nil {
		return nil, r.err
	}
	r.asked = append(r.asked, sar.Spec)
	ra := sar.Spec.ResourceAttributes
	key := ra.Resource + "/" + ra.Subresource + "|" + ra.Namespace + "|" + ra.Name
	if ra.Verb != "impersonate" {
		return nil, errors.New("asked about " + ra.Verb)
	}
	sar.Status.Allowed = r.allowed[key]
	return sar, nil
}

func TestMayImpersonate(t *testing.T) {
	admin := &tetherv1.Identity{User: "admin", Groups: []string{"tether:cluster-admins"}}
	alice := &tetherv1.Identity{User: "alice", Groups: []string{"acme:developers"}, Uid: "u-1",
		Extra: map[string]*tetherv1.Values{"scopes": {Values: []string{"view"}}}}
	all := map[string]bool{"users/||alice": true, "groups/||acme:developers": true, "uids/||u-1": true, "userextras/scopes||view": true,
		"serviceaccounts/|apps|builder": true}
	tests := []struct {
		name    string
		as      *tetherv1.Identity
		allowed map[string]bool
		err     error
		code    int    // 0: allowed
		message string // the start of the Status message
		reviews int
	}{
		{"every part allowed", alice, all, nil, 0, "", 4},
		{"the user not", alice, map[string]bool{}, nil, http.StatusForbidden,
			`users "alice" is forbidden: User "admin" cannot impersonate resource "users" in API group "" at the cluster scope`, 1},
		{"a group not", alice, map[string]bool{"users/||alice": true, "uids/||u-1": true}, nil, http.StatusForbidden,
			`groups "acme:developers" is forbidden: User "admin" cannot impersonate resource "groups" in API group "" at the cluster scope`, 3},
		{"the uid not", alice, map[string]bool{"users/||alice": true}, nil, http.StatusForbidden,
			`uids.authentication.k8s.io "u-1" is forbidden: User "admin" cannot impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope`, 2},
		{"an extra not", alice, map[string]bool{"users/||alice": true, "uids/||u-1": true, "groups/||acme:developers": true}, nil, http.StatusForbidden,
			`userextras.authentication.k8s.io "view" is forbidden: User "admin" cannot impersonate resource "userextras/scopes" in API group "authentication.k8s.io" at the cluster scope`, 4},
		{"a service account, in its namespace", &tetherv1.Identity{User: "system:serviceaccount:apps:builder"}, all, nil, 0, "", 1},
		{"the kube-apiserver unreachable", alice, all, errors.New("connection refused"), http.StatusServiceUnavailable, "the Tether agent", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAgent(t)
			r := &reviews{allowed: tt.allowed, err: tt.err}
			a.cfg.AccessReviews = r
			st := a.mayImpersonate(context.Background(), admin, tt.as)
			switch {
			case tt.code == 0 && st != nil:
				t.Fatalf("refused: %s", st.Message)
			case tt.code != 0 && (st == nil || st.Code != tt.code || !strings.HasPrefix(st.Message, tt.message)):
				t.Fatalf("got %+v, want %d %q", st, tt.code, tt.message)
			}
			if len(r.asked) != tt.reviews {
				t.Fatalf("%d reviews, want %d", len(r.asked), tt.reviews)
			}
			for _, spec := range r.asked {
				// Asked as whom the gateway authenticated, never as the target.
				if spec.User != "admin" || len(spec.Groups) != 1 || spec.Groups[0] != "tether:cluster-admins" {
					t.Fatalf("review asked as %+v", spec)
				}
			}
		})
	}
}
