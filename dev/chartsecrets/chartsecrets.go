// Package chartsecrets makes the Secrets the Helm chart (deploy/helm/tether)
// mounts when its certificates come from Secrets: NATS passwords, the
// agent-credential signing key pair, the gateways' identity key and the
// identity root's public key, an internal CA with a certificate per
// component and, for a trial, public certificates from a throwaway CA. Not
// a production PKI: every key is made here and printed.
package chartsecrets

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/tether-dev/tether/dev/pki"
	"github.com/tether-dev/tether/dev/stack"
	"github.com/tether-dev/tether/lib/agentcred"
)

// Options name the release the Secrets are for.
type Options struct {
	Namespace, Release string
	// GatewayHost and AgentsHost, when set, get public certificates
	// (expose.gateway.host, expose.agents.host) from a throwaway CA.
	GatewayHost, AgentsHost string
	// RootKeyOut, when set, is where the identity root's private key is
	// written (0600), to certify the next gateway key with; otherwise it
	// is thrown away, and rotating the gateways' key means a new root
	// and reinstalling every agent.
	RootKeyOut string
}

// internalComponents are the chart's components with an internal
// certificate (deploy/helm/tether, secretNames.internalTLSPrefix).
var internalComponents = []string{"gateway", "router", "subscriber", "agent-registry", "audit", "autoscaler", "nats-auth", "nats"}

// TokenRoles log in to NATS with their pods' ServiceAccount tokens in the
// chart (nats-auth), not with a password.
var TokenRoles = []string{"router", "subscriber"}

// List returns the Secrets as a Kubernetes List (JSON), each new: NATS
// passwords, a key pair for agent credentials, an internal CA with a
// certificate for each component (mTLS between services, NATS TLS) and,
// when asked, the two public certificates (agents then need that CA:
// ca.crt in the agents' Secret).
func List(o Options) ([]byte, error) {
	if o.Namespace == "" || o.Release == "" {
		return nil, fmt.Errorf("chartsecrets: a namespace and a release are required")
	}
	full := Fullname(o.Release)
	// Routers and subscribers log in with their pods' tokens; the rest,
	// and nats-auth itself, with a password.
	var users []string
	for _, u := range stack.NATSUsers(nil) {
		if !slices.Contains(TokenRoles, u) {
			users = append(users, u)
		}
	}
	passwords := stack.NewNATSPasswords(append(users, "nats-auth"))
	hashes, err := stack.NATSHashes(passwords)
	if err != nil {
		return nil, err
	}
	// Each service mounts its own password; nats-auth and the NATS nodes
	// get only the bcrypt hashes (KEY.bcrypt).
	natsAuth := make(map[string]string, 2*len(passwords)+2)
	for name, pw := range passwords {
		natsAuth[name], natsAuth[name+".bcrypt"] = pw, hashes[name]
	}
	// The key nats-auth signs its answers with: the nodes trust its
	// public half.
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		return nil, fmt.Errorf("chartsecrets: the NATS auth issuer: %w", err)
	}
	seed, _ := issuer.Seed()
	pubKey, _ := issuer.PublicKey()
	natsAuth["issuer.nk"], natsAuth["issuer.pub"] = string(seed), pubKey
	dir, err := os.MkdirTemp("", "tether-keys-")
	if err != nil {
		return nil, fmt.Errorf("chartsecrets: %w", err)
	}
	defer os.RemoveAll(dir)
	priv, pub := filepath.Join(dir, "signing.key"), filepath.Join(dir, "signing.pub")
	if err := agentcred.WriteKeyPair(priv, pub); err != nil {
		return nil, err
	}
	signing, err := readFiles(map[string]string{"signing.key": priv, "signing.pub": pub})
	if err != nil {
		return nil, err
	}
	secret := func(name, typ string, data map[string]string) any {
		return map[string]any{"apiVersion": "v1", "kind": "Secret", "type": typ,
			"metadata": map[string]any{"name": name, "namespace": o.Namespace}, "stringData": data}
	}
	// The identity root's private key is used here, to certify the
	// gateways' key, and then left out: it belongs in the operator's
	// safe, not in the cluster (ADR 011). RootKeyOut keeps it.
	ident, err := pki.WriteIdentityKeys(filepath.Join(dir, "identity"))
	if err != nil {
		return nil, err
	}
	identity, err := readFiles(map[string]string{"gateway.key": ident.GatewayKey, "root.pub": ident.RootPublic})
	if err != nil {
		return nil, err
	}
	if o.RootKeyOut != "" {
		b, err := os.ReadFile(ident.RootKey)
		if err == nil {
			err = os.WriteFile(o.RootKeyOut, b, 0o600)
		}
		if err != nil {
			return nil, fmt.Errorf("chartsecrets: keeping the identity root's key: %w", err)
		}
	}
	items := []any{
		secret(full+"-nats-auth", "Opaque", natsAuth),
		secret(full+"-agent-signing", "Opaque", signing),
		secret(full+"-identity", "Opaque", identity),
	}
	internal, err := pki.NewCA(filepath.Join(dir, "internal"), full+"-internal-ca")
	if err != nil {
		return nil, err
	}
	for _, c := range internalComponents {
		hosts := []string{full + "-" + c, full + "-" + c + "." + o.Namespace, full + "-" + c + "." + o.Namespace + ".svc", full + "-" + c + "." + o.Namespace + ".svc.cluster.local"}
		if c == "nats" {
			// Each node by its own name too, for the routes between them.
			headless := full + "-nats-headless." + o.Namespace + ".svc"
			hosts = append(hosts, "*."+headless, "*."+headless+".cluster.local")
		}
		data, err := issue(internal, filepath.Join(dir, "internal"), c, hosts, true)
		if err != nil {
			return nil, err
		}
		items = append(items, secret(full+"-internal-"+c, "kubernetes.io/tls", data))
	}
	if o.GatewayHost != "" || o.AgentsHost != "" {
		public, err := pki.NewCA(filepath.Join(dir, "public"), full+"-trial-ca")
		if err != nil {
			return nil, err
		}
		for name, host := range map[string]string{"gateway-tls": o.GatewayHost, "agents-tls": o.AgentsHost} {
			if host == "" {
				continue
			}
			data, err := issue(public, filepath.Join(dir, "public"), host, []string{host}, false)
			if err != nil {
				return nil, err
			}
			items = append(items, secret(full+"-"+name, "kubernetes.io/tls", data))
		}
	}
	return json.MarshalIndent(map[string]any{"apiVersion": "v1", "kind": "List", "items": items}, "", "  ")
}

// Fullname is the chart's tether.fullname: the release's name, or
// RELEASE-tether when it does not contain "tether".
func Fullname(release string) string {
	full := release + "-tether"
	if strings.Contains(release, "tether") {
		full = release
	}
	if len(full) > 40 {
		full = full[:40]
	}
	return strings.TrimSuffix(full, "-")
}

// issue makes a certificate of ca for hosts (a service certificate, CommonName
// name, for mutual TLS; or a serving one) as kubernetes.io/tls Secret data.
func issue(ca *pki.CA, dir, name string, hosts []string, service bool) (map[string]string, error) {
	issuer := ca.IssueServer
	if service {
		issuer = ca.IssueService
	}
	certPath, keyPath, err := issuer(dir, name, hosts)
	if err != nil {
		return nil, fmt.Errorf("issuing a certificate for %s: %w", name, err)
	}
	return readFiles(map[string]string{"tls.crt": certPath, "tls.key": keyPath, "ca.crt": ca.CertPath})
}

func readFiles(paths map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(paths))
	for key, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		out[key] = string(b)
	}
	return out, nil
}
