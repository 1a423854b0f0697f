package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tether-dev/tether/dev/stack"
	"github.com/tether-dev/tether/lib/agentcred"
)

// secrets prints, as a Kubernetes List, the Secrets deploy/tether.yaml
// mounts: the NATS users with new passwords, and a new key pair for agent
// credentials.
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
	secret := func(name string, data map[string]string) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
			"metadata": map[string]any{"name": name, "namespace": *ns}, "stringData": data}
	}
	list := map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{
		secret("tether-nats-auth", natsData),
		secret("tether-agent-signing", map[string]string{"signing.key": string(privPEM), "signing.pub": string(pubPEM)}),
	}}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", b)
	return err
}
