package agent

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// SecretStore keeps the credential in a Kubernetes Secret of the agent's
// own namespace, so a rescheduled agent pod connects without a new
// bootstrap token.
type SecretStore struct {
	Secrets   corev1client.SecretsGetter
	Namespace string
	Name      string
}

const secretKey = "credential"

func (s SecretStore) Load(ctx context.Context) (Credential, error) {
	sec, err := s.Secrets.Secrets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Credential{}, nil
	}
	if err != nil {
		return Credential{}, fmt.Errorf("reading secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	var c Credential
	if b := sec.Data[secretKey]; len(b) > 0 {
		if err := json.Unmarshal(b, &c); err != nil {
			return Credential{}, fmt.Errorf("parsing secret %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	return c, nil
}

func (s SecretStore) Save(ctx context.Context, c Credential) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	secrets := s.Secrets.Secrets(s.Namespace)
	sec, err := secrets.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "tether"}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{secretKey: b},
		}, metav1.CreateOptions{})
	} else if err == nil {
		if sec.Data == nil {
			sec.Data = map[string][]byte{}
		}
		sec.Data[secretKey] = b
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("writing secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}
