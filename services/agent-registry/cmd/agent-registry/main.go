// Command agent-registry keeps the record of clusters: it writes their
// lifecycle events (created, deleted, bootstrap token issued, agent
// enrolled) to the JetStream stream CLUSTERS, gives agents their
// credentials in exchange for a one-time bootstrap token, and projects the
// agent events subscribers report (stream AGENTS) into the KV bucket
// AGENTS_STATE: where each cluster's agent is, since when, and its health,
// by the subscribers' leases (stream SUBSCRIBERS, ADR 014). Gateways call its
// ClusterService for tetherctl; subscribers relay its EnrollmentService to
// agents.
//
//	agent-registry --listen 127.0.0.1:8083 --nats-url nats://127.0.0.1:4222 \
//	  --signing-key agent-signing.key --agent-endpoint https://agents.example.com
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tether-dev/tether/lib/agentcred"
	"github.com/tether-dev/tether/lib/assertion"
	"github.com/tether-dev/tether/lib/backoff"
	"github.com/tether-dev/tether/lib/clusters"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/services/agent-registry/internal/registry"
)

func main() {
	var (
		common           svc.Common
		listen           string
		natsFlags        svc.NATS
		signingKey       string
		previousKeys     string
		agentEndpoint    string
		identityRoot     string
		replicas         int
		cfg              registry.Config
		mtls             svc.MTLS
		clusterCalls     string
		enrollCalls      string
		heartbeatTimeout time.Duration
	)
	fs := flag.NewFlagSet("agent-registry", flag.ExitOnError)
	common.Register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:8083", "address gateways and subscribers call")
	natsFlags.Register(fs)
	fs.StringVar(&signingKey, "signing-key", os.Getenv("TETHER_AGENT_SIGNING_KEY"), "Ed25519 private key (PKCS#8 PEM) that signs agent credentials")
	fs.StringVar(&previousKeys, "previous-public-keys", "", "public keys (PEM) of earlier signing keys whose credentials may still be renewed, comma-separated; for key rotation")
	fs.StringVar(&agentEndpoint, "agent-endpoint", os.Getenv("TETHER_AGENT_ENDPOINT"), "URL agents connect to (the subscribers' public address), written into install manifests")
	fs.StringVar(&identityRoot, "identity-root-key", os.Getenv("TETHER_IDENTITY_ROOT_KEY"), "PEM file of the identity root's public key, written into install manifests: agents trust the gateway keys it certified")
	fs.DurationVar(&cfg.BootstrapTTL, "bootstrap-ttl", time.Hour, "how long a bootstrap token stays usable")
	fs.DurationVar(&cfg.CredentialTTL, "credential-ttl", time.Hour, "how long an agent credential lives; agents renew at two thirds")
	fs.DurationVar(&cfg.RenewGrace, "renew-grace", 7*24*time.Hour, "how long after expiry an agent may still renew its credential (its cluster was offline); 0: never")
	fs.DurationVar(&heartbeatTimeout, "heartbeat-timeout", 30*time.Second, "a subscriber whose lease went unrenewed this long is dead: its agents' streams count as unhealthy, then are swept")
	fs.IntVar(&replicas, "stream-replicas", 1, "replicas of the CLUSTERS stream (3 on a NATS cluster)")
	mtls.Register(fs, "")
	fs.StringVar(&clusterCalls, "cluster-callers", "gateway", "with mTLS: services (certificate names) that may create, list and delete clusters, comma-separated")
	fs.StringVar(&enrollCalls, "enrollment-callers", "subscriber", "with mTLS: services that may enroll and renew agents, comma-separated")
	_ = fs.Parse(os.Args[1:])

	os.Exit(svc.Run("agent-registry", common, func(ctx context.Context, env *svc.Env) error {
		if signingKey == "" {
			return errors.New("--signing-key is required")
		}
		signer, err := agentcred.LoadSigner(signingKey)
		if err != nil {
			return err
		}
		var extra []string
		if previousKeys != "" {
			extra = strings.Split(previousKeys, ",")
		}
		prev, err := agentcred.ReadPublicKeys(extra...)
		if err != nil {
			return err
		}
		if cfg.Verifier, err = agentcred.NewVerifier(append(prev, signer.Public())...); err != nil {
			return err
		}
		nc, err := env.ConnectNATS(ctx, natsFlags, "agent-registry")
		if err != nil {
			return err
		}
		// JetStream calls fail after 2 s rather than nats.go's 5: while a
		// NATS cluster elects a new leader for a stream, a call to the old
		// one gets no answer, and the next try reaches the new one.
		js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(2*time.Second))
		if err != nil {
			return err
		}
		// A NATS cluster may still be electing its JetStream leader: keep
		// trying, not ready meanwhile.
		var agents *registry.AgentView
		b := backoff.Default()
		for {
			err := registry.EnsureStream(ctx, js, replicas)
			if err == nil {
				agents, err = registry.StartAgentView(ctx, registry.AgentViewConfig{JS: js, Replicas: replicas, Timeout: heartbeatTimeout, Logger: env.Log})
			}
			if err == nil {
				break
			}
			env.Log.Warn("setting up the JetStream streams; trying again", "err", err)
			if !b.Sleep(ctx) {
				return ctx.Err()
			}
		}
		cfg.Agents = agents
		// Not ready before the view can tell live streams from dead.
		env.Admin.AddCheck("agents", agents.Ready)
		if err := env.Telemetry.Registry.Register(agents.Gauge()); err != nil {
			return err
		}
		proj, follower, err := clusters.Start(ctx, js, env.Log)
		if err != nil {
			return err
		}
		env.Admin.AddCheck("clusters", follower.Ready)

		// Read as a verifier would, so a manifest never carries anything
		// but one Ed25519 public key.
		if _, err := assertion.LoadVerifier(identityRoot); err != nil {
			return fmt.Errorf("--identity-root-key: %w", err)
		}
		rootPEM, err := os.ReadFile(identityRoot)
		if err != nil {
			return err
		}
		cfg.JS, cfg.Clusters, cfg.Sync, cfg.Signer, cfg.AgentEndpoint, cfg.IdentityRoot = js, proj, follower.Sync, signer, agentEndpoint, string(rootPEM)
		cfg.Instruments = env.Telemetry.Instruments()
		reg, err := registry.New(cfg)
		if err != nil {
			return err
		}
		// Each API to its own callers: a subscriber, which faces the
		// internet, can enroll agents but never touch the clusters.
		clusterCallers, enrollCallers := strings.Split(clusterCalls, ","), strings.Split(enrollCalls, ",")
		mtls.Allow = append(append([]string{}, clusterCallers...), enrollCallers...)
		mux := http.NewServeMux()
		path, h := tetherv1connect.NewClusterServiceHandler(reg)
		mux.Handle(path, mtls.Only(h, clusterCallers...))
		path, h = tetherv1connect.NewEnrollmentServiceHandler(reg)
		mux.Handle(path, mtls.Only(h, enrollCallers...))
		// Its callers are trusted with clusters and credentials: with mTLS,
		// only gateways and subscribers, by their certificates.
		server, tlsOn, err := mtls.Server(mux)
		if err != nil {
			return err
		}
		if err := env.Serve(ctx, svc.Listener{What: "gateways and subscribers", Addr: listen, Server: server, TLS: tlsOn}); err != nil {
			return err
		}
		return natsconn.Drain(nc, 5*time.Second)
	}))
}
