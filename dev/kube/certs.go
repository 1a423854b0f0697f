package kube

import (
	"fmt"
	"path/filepath"

	"github.com/tether-dev/tether/dev/pki"
)

// certFiles holds the paths of the key material one control plane uses. It is
// regenerated on every Start: nothing outlives the processes that trust it.
type certFiles struct {
	caCert, caKey                       string
	servingCert, servingKey             string
	kubeletClientCert, kubeletClientKey string
	saKey, saPub                        string
}

func writeCerts(dir string) (*certFiles, error) {
	// The controller manager signs CSRs with the CA key (see
	// --cluster-signing-key-file), which pki writes in a form it reads.
	ca, err := pki.NewCA(dir, "ca")
	if err != nil {
		return nil, err
	}
	c := &certFiles{
		caCert: ca.CertPath,
		caKey:  ca.KeyPath,
		saKey:  filepath.Join(dir, "sa.key"),
		saPub:  filepath.Join(dir, "sa.pub"),
	}
	if c.servingCert, c.servingKey, err = ca.IssueServer(dir, "apiserver", []string{"127.0.0.1", "localhost"}); err != nil {
		return nil, err
	}
	if c.kubeletClientCert, c.kubeletClientKey, err = ca.IssueClient(dir, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"tether-dev"}); err != nil {
		return nil, err
	}
	if err := pki.WriteRSAKey(c.saKey, c.saPub); err != nil {
		return nil, fmt.Errorf("service account key: %w", err)
	}
	return c, nil
}
