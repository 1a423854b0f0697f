package stack

// How the stack is reached from outside: the kubeconfigs it writes for its
// users, and HTTP clients for the gateway, the subscribers and the
// internal endpoints.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/tether-dev/tether/lib/svc"
)

// InternalTransport calls Tether's internal endpoints as the stack's
// operator (a certificate agent-registry accepts).
//
// It is made once per stack: a client made per call (a test polling
// agent-registry every 50 ms) would leave a connection behind each time,
// which the server holds, with its goroutines, until it is idle long
// enough.
func (s *Stack) InternalTransport() (http.RoundTripper, error) {
	s.internal.once.Do(func() {
		m := svc.MTLS{CertFile: s.certFile(operator), KeyFile: s.keyFile(operator), CAFile: s.CAFile}
		s.internal.rt, s.internal.err = m.Transport()
	})
	return s.internal.rt, s.internal.err
}

func (s *Stack) writeTokens() (string, error) {
	var b strings.Builder
	b.WriteString("# token,user,uid,groups,tenants\n")
	for _, u := range s.opts.Users {
		if u.Token == "" {
			u.Token = u.Name + "-" + randomHex(16)
		}
		s.Users[u.Name] = u
		fmt.Fprintf(&b, "%s,%s,%s,%q,%q\n", u.Token, u.Name, "uid-"+u.Name, strings.Join(u.Groups, ","), strings.Join(u.Tenants, ","))
	}
	path := filepath.Join(s.opts.StateDir, "tokens.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	return path, nil
}

// Kubeconfig writes a kubeconfig that reaches the stack's cluster through
// the gateway as user, and returns its path.
func (s *Stack) Kubeconfig(user string) (string, error) {
	u, ok := s.Users[user]
	if !ok {
		return "", fmt.Errorf("stack: no user %q", user)
	}
	return s.KubeconfigFor(user, u.Token, ClusterID)
}

// KubeconfigFor writes a kubeconfig for any token and cluster id, for tests
// that probe what the gateway refuses.
func (s *Stack) KubeconfigFor(name, token, cluster string) (string, error) {
	return s.writeKubeconfig(name, cluster, map[string]any{"token": token})
}

// writeKubeconfig writes kubeconfig-<name> for cluster with the given user
// entry.
func (s *Stack) writeKubeconfig(name, cluster string, user map[string]any) (string, error) {
	return s.writeKubeconfigAt(name, s.GatewayURL+"/clusters/"+cluster, user)
}

// writeKubeconfigAt writes kubeconfig-<name> for a server URL.
func (s *Stack) writeKubeconfigAt(name, server string, user map[string]any) (string, error) {
	cfg := map[string]any{
		"apiVersion":      "v1",
		"kind":            "Config",
		"current-context": "tether",
		"clusters": []any{map[string]any{"name": "tether", "cluster": map[string]any{
			"server": server, "certificate-authority": s.CAFile,
		}}},
		"users":    []any{map[string]any{"name": name, "user": user}},
		"contexts": []any{map[string]any{"name": "tether", "context": map[string]any{"cluster": "tether", "user": name}}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(s.opts.StateDir, "kubeconfig-"+name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	return path, nil
}

// HTTPClient trusts the gateway's CA.
func (s *Stack) HTTPClient() (*http.Client, error) {
	pool, err := s.roots()
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 256,
	}}, nil
}

// AgentTransport reaches the subscribers as an agent does: HTTP/2 over
// TLS, trusting the stack's CA; for tests that play an agent.
func (s *Stack) AgentTransport() (*http.Transport, error) {
	pool, err := s.roots()
	if err != nil {
		return nil, err
	}
	t := svc.H2CTransport()
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP2(true)
	t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return t, nil
}

// roots are the stack's CA alone.
func (s *Stack) roots() (*x509.CertPool, error) {
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("stack: no certificate in " + s.CAFile)
	}
	return pool, nil
}
