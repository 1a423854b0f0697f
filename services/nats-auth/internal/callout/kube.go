package callout

import (
	"context"
	"errors"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// podNameExtra is where a TokenReview names the pod a bound token belongs
// to.
const podNameExtra = "authentication.kubernetes.io/pod-name"

// KubeReviewer reviews tokens with the kube-apiserver's TokenReview API.
type KubeReviewer struct {
	client kubernetes.Interface
	// audience is the one the tokens must be for: a token meant for the
	// kube-apiserver itself, or for anyone else, is refused.
	audience string
}

// NewKubeReviewer reviews tokens for audience.
func NewKubeReviewer(client kubernetes.Interface, audience string) (*KubeReviewer, error) {
	if client == nil || audience == "" {
		return nil, errors.New("callout: a Kubernetes client and an audience are required")
	}
	return &KubeReviewer{client: client, audience: audience}, nil
}

// Review implements TokenReviewer.
func (k *KubeReviewer) Review(ctx context.Context, token string) (Review, error) {
	tr, err := k.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{k.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Review{}, fmt.Errorf("callout: reviewing a token: %w", err)
	}
	if !tr.Status.Authenticated {
		return Review{}, refuse("invalid_token", "the kube-apiserver does not accept the token for %s: %s", k.audience, tr.Status.Error)
	}
	rev := Review{Username: tr.Status.User.Username}
	if pods := tr.Status.User.Extra[podNameExtra]; len(pods) == 1 {
		rev.Pod = pods[0]
	}
	return rev, nil
}
