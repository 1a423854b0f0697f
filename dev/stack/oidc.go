package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
)

// startIdP starts the development identity provider at IssuerURL with the
// OIDC users, and waits until it serves.
func (s *Stack) startIdP(ctx context.Context) error {
	u, err := url.Parse(s.IssuerURL)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.opts.StateDir, "idp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	host, _, _ := net.SplitHostPort(u.Host)
	cert, key, err := s.ca.IssueServer(filepath.Join(s.opts.StateDir, "pki"), "idp", []string{host})
	if err != nil {
		return err
	}
	b, err := json.Marshal(OIDCUsers())
	if err != nil {
		return err
	}
	users := filepath.Join(dir, "users.json")
	if err := os.WriteFile(users, b, 0o600); err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	s.IdPKeyDir = filepath.Join(dir, "keys")
	p, err := s.start(ctx, "devidp", "--listen", u.Host, "--issuer", s.IssuerURL, "--tls-cert", cert, "--tls-key", key,
		"--users", users, "--client-id", OIDCClientID, "--key-dir", s.IdPKeyDir)
	if err != nil {
		return err
	}
	return s.waitHTTPS(ctx, s.IssuerURL+"/healthz", p)
}

// OIDCKubeconfig writes a kubeconfig for an OIDC user: kubectl runs
// `tetherctl login` for a token, which the development provider grants at
// once by login hint (its `approve` stands in for the browser). tokenCache
// is where tetherctl caches tokens; empty: the stack's own folder.
func (s *Stack) OIDCKubeconfig(user, tokenCache string) (string, error) {
	if tokenCache == "" {
		tokenCache = filepath.Join(s.opts.StateDir, "tokens")
	}
	exec := map[string]any{
		"apiVersion": "client.authentication.k8s.io/v1",
		"command":    s.Bin("tetherctl"),
		"args": []string{"login", "--issuer", s.IssuerURL, "--client-id", OIDCClientID, "--login-hint", user,
			"--ca-file", s.CAFile, "--cache-dir", tokenCache, "--browser", s.Bin("devidp") + " approve --ca-file " + s.CAFile},
		"interactiveMode":    "Never",
		"provideClusterInfo": false,
	}
	return s.writeKubeconfig("oidc-"+user, ClusterID, map[string]any{"exec": exec})
}
