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
	// The front proxy's CA (--requestheader-client-ca-file), and a
	// client certificate it signed for an agent that passes users in
	// headers instead of impersonating them.
	frontProxyCA                  string
	frontProxyCert, frontProxyKey string
}

// FrontProxyName is the common name the development control plane lets
// present users in headers (--requestheader-allowed-names).
const FrontProxyName = "tether-agent"

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
	fp, err := pki.NewCA(dir, "front-proxy-ca")
	if err != nil {
		return nil, err
	}
	c.frontProxyCA = fp.CertPath
	if c.frontProxyCert, c.frontProxyKey, err = fp.IssueClient(dir, "front-proxy-client", FrontProxyName, nil); err != nil {
		return nil, err
	}
	if err := pki.WriteRSAKey(c.saKey, c.saPub); err != nil {
		return nil, fmt.Errorf("service account key: %w", err)
	}
	return c, nil
}
