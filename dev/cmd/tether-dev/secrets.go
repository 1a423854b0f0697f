package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tether-dev/tether/dev/pki"
	"github.com/tether-dev/tether/dev/stack"
	"github.com/tether-dev/tether/lib/agentcred"
)

// secrets prints, as a Kubernetes List, the Secrets deploy/tether.yaml
// mounts: the NATS users with new passwords, a new key pair for agent
// credentials, and an internal CA with a certificate for each service
// (mTLS between services, TLS for NATS).
//
//	go run ./dev/cmd/tether-dev secrets --namespace tether | kubectl apply -f -
func secrets(args []string) error {
	fs := flag.NewFlagSet("secrets", flag.ContinueOnError)
	ns := fs.String("namespace", "tether", "namespace of the Secrets")
	if err := fs.Parse(args); err != nil {
		return err
	}
	passwords := stack.NewNATSPasswords()
	auth, err := stack.NATSAuth(passwords)
	if err != nil {
		return err
	}
	natsData := map[string]string{"auth.json": string(auth)}
	for svc, pw := range passwords {
		natsData[svc] = pw
	}
	dir, err := os.MkdirTemp("", "tether-keys-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	priv, pub := filepath.Join(dir, "signing.key"), filepath.Join(dir, "signing.pub")
	if err := agentcred.WriteKeyPair(priv, pub); err != nil {
		return err
	}
	privPEM, err := os.ReadFile(priv)
	if err != nil {
		return err
	}
	pubPEM, err := os.ReadFile(pub)
	if err != nil {
		return err
	}
	internal, err := internalTLS(dir, *ns)
	if err != nil {
		return err
	}
	secret := func(name string, data map[string]string) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
			"metadata": map[string]any{"name": name, "namespace": *ns}, "stringData": data}
	}
	list := map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{
		secret("tether-nats-auth", natsData),
		secret("tether-agent-signing", map[string]string{"signing.key": string(privPEM), "signing.pub": string(pubPEM)}),
		secret("tether-internal-tls", internal),
	}}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", b)
	return err
}

// internalTLS makes an internal CA and a certificate for each service,
// named as deploy/tether.yaml's Services are, and returns them as Secret
// data: ca.crt, <service>.crt, <service>.key.
func internalTLS(dir, ns string) (map[string]string, error) {
	ca, err := pki.NewCA(filepath.Join(dir, "ca"), "tether-internal-ca")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	b, err := os.ReadFile(ca.CertPath)
	if err != nil {
		return nil, err
	}
	out["ca.crt"] = string(b)
	for _, name := range []string{"nats", "agent-registry", "subscriber", "router", "gateway"} {
		hosts := []string{name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"}
		if name == "nats" {
			// Each server by its own name too, for the routes between them.
			hosts = append(hosts, "*.nats-cluster."+ns+".svc", "*.nats-cluster."+ns+".svc.cluster.local")
		}
		certPath, keyPath, err := ca.IssueService(dir, name, hosts)
		if err != nil {
			return nil, err
		}
		for suffix, path := range map[string]string{".crt": certPath, ".key": keyPath} {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			out[name+suffix] = string(b)
		}
	}
	return out, nil
}
