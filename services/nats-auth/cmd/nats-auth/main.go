// Command nats-auth is the NATS servers' auth callout (ADR 012): NATS asks
// it, for every client that connects, who the client is and what it may
// publish and subscribe to. It gives each router and subscriber pod a NATS
// user of its own, named after the pod, which its projected ServiceAccount
// token proves (a TokenReview), so one pod cannot read another's inbox;
// other services log in with a password, checked against its bcrypt hash.
//
//	nats-auth --nats-url tls://nats:4222 --nats-user nats-auth --nats-password-file F \
//	  --issuer-seed-file issuer.nk --roles roles.json [--password-hashes DIR] [--kubeconfig F]
//
// The roles file is JSON:
//
//	{"roles": [
//	  {"name": "router", "serviceAccount": "system:serviceaccount:tether:tether-router",
//	   "publish": ["tether.req.*"], "subscribe": ["tether.rtr.{user}.>", "_INBOX_{user}.>"]},
//	  {"name": "agent-registry", "passwordHashFile": "agent-registry.bcrypt",
//	   "publish": ["tether.clusters.*"], "subscribe": ["_INBOX_{user}.>"], "responses": true}]}
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/services/nats-auth/internal/callout"
)

func main() {
	var (
		common     svc.Common
		natsFlags  svc.NATS
		issuerSeed string
		rolesFile  string
		kubeconfig string
		audience   string
		parallel   int
		hashDir    string
	)
	fs := flag.NewFlagSet("nats-auth", flag.ExitOnError)
	common.Register(fs)
	natsFlags.Register(fs)
	fs.StringVar(&issuerSeed, "issuer-seed-file", os.Getenv("TETHER_NATS_AUTH_ISSUER_SEED_FILE"), "file holding the account seed (SA…) whose public key the NATS servers name as auth_callout's issuer")
	fs.StringVar(&rolesFile, "roles", "", "JSON file of the roles: who may log in, how, and with which permissions")
	fs.StringVar(&hashDir, "password-hashes", "", "folder of the roles' password hash files; empty: the roles file's")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for TokenReviews; empty: the pod's own (in-cluster) configuration")
	fs.StringVar(&audience, "token-audience", "tether-nats", "audience the pods' projected ServiceAccount tokens must be for")
	fs.IntVar(&parallel, "parallel", 32, "requests answered at a time")
	_ = fs.Parse(os.Args[1:])

	os.Exit(svc.Run("nats-auth", common, func(ctx context.Context, env *svc.Env) error {
		seed, err := os.ReadFile(issuerSeed)
		if err != nil {
			return fmt.Errorf("--issuer-seed-file: %w", err)
		}
		issuer, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
		if err != nil {
			return fmt.Errorf("--issuer-seed-file: %w", err)
		}
		roles, err := readRoles(rolesFile, hashDir)
		if err != nil {
			return err
		}
		cfg := callout.Config{Issuer: issuer, Roles: roles, Log: env.Log, Registerer: env.Telemetry.Registry}
		for _, r := range roles {
			if r.ServiceAccount == "" {
				continue
			}
			kc, err := kubeConfig(kubeconfig)
			if err != nil {
				return err
			}
			client, err := kubernetes.NewForConfig(kc)
			if err != nil {
				return fmt.Errorf("a Kubernetes client: %w", err)
			}
			if cfg.Reviews, err = callout.NewKubeReviewer(client, audience); err != nil {
				return err
			}
			break
		}
		c, err := callout.New(cfg)
		if err != nil {
			return err
		}
		nc, err := env.ConnectNATS(ctx, natsFlags, "nats-auth")
		if err != nil {
			return err
		}
		env.Log.Info("answering the NATS servers' auth requests", "roles", len(roles))
		serr := c.Serve(ctx, nc, parallel)
		if err := natsconn.Drain(nc, env.ShutdownTimeout); err != nil {
			env.Log.Warn("draining NATS", "err", err)
		}
		return serr
	}))
}

// readRoles reads the roles file, with each password role's hash.
func readRoles(path, hashDir string) ([]callout.Role, error) {
	if hashDir == "" {
		hashDir = filepath.Dir(path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--roles: %w", err)
	}
	var file struct {
		Roles []struct {
			Name             string   `json:"name"`
			PasswordHashFile string   `json:"passwordHashFile"`
			ServiceAccount   string   `json:"serviceAccount"`
			Publish          []string `json:"publish"`
			Subscribe        []string `json:"subscribe"`
			Responses        bool     `json:"responses"`
		} `json:"roles"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("--roles %s: %w", path, err)
	}
	if len(file.Roles) == 0 {
		return nil, fmt.Errorf("--roles %s: no roles", path)
	}
	out := make([]callout.Role, 0, len(file.Roles))
	for _, r := range file.Roles {
		role := callout.Role{Name: r.Name, ServiceAccount: r.ServiceAccount, Publish: r.Publish, Subscribe: r.Subscribe, Responses: r.Responses}
		if r.PasswordHashFile != "" {
			p := r.PasswordHashFile
			if !filepath.IsAbs(p) {
				p = filepath.Join(hashDir, p)
			}
			h, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("role %s: %w", r.Name, err)
			}
			role.PasswordHash = []byte(strings.TrimSpace(string(h)))
		}
		out = append(out, role)
	}
	return out, nil
}

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, errors.New("not in a pod: --kubeconfig is required for the roles with a service account")
		}
		return cfg, err
	}
	return clientcmd.BuildConfigFromFlags("", path)
}
