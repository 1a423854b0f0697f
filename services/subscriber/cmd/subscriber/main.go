// Command subscriber holds agents' streams and relays the requests that
// routers publish on NATS for those agents' clusters. An agent connects
// only with a credential agent-registry signed for its cluster, serves only
// that cluster, and is cut off when the cluster is deleted; agents enroll
// and renew through the subscriber, which passes those calls on to the
// registry.
//
//	subscriber --listen :8443 --tls-cert tls.crt --tls-key tls.key --nats-url nats://127.0.0.1:4222 \
//	  --credential-keys agent-signing.pub --registry-url https://agent-registry:8083
//
// Agents reach it over the network of their cluster, often through a proxy
// or a load balancer that passes TLS through: it serves TLS itself, HTTP/2
// by ALPN. Cleartext is for debugging on one machine (--insecure-cleartext).
package main

import (
	"context"
	"errors"
	"flag"
	"net/http"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tether-dev/tether/lib/agentcred"
	"github.com/tether-dev/tether/lib/clusters"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/subscriber/internal/subscriber"
)

func main() {
	var (
		common     svc.Common
		listen     string
		natsFlags  svc.NATS
		id         string
		ka         tunnel.Keepalive
		idleProbe  time.Duration
		keys       string
		registry   string
		mtls       svc.MTLS
		heartbeat  time.Duration
		reannounce time.Duration
		admitRate  float64
		admitBurst int
		moveWait   time.Duration
		natsGrace  time.Duration
		serving    svc.ServingCert
		cleartext  bool
	)
	fs := flag.NewFlagSet("subscriber", flag.ExitOnError)
	common.Register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:8081", "address agents connect to")
	serving.Register(fs, "agents")
	fs.BoolVar(&cleartext, "insecure-cleartext", false, "serve agents HTTP/2 without TLS: for debugging on one machine only")
	natsFlags.Register(fs)
	fs.StringVar(&id, "id", svc.EnvOr("TETHER_SUBSCRIBER_ID", ""), "instance id; default: host name and pid")
	fs.DurationVar(&ka.Interval, "ping-interval", tunnel.DefaultKeepalive.Interval, "ping an agent after this long without traffic")
	fs.DurationVar(&ka.Timeout, "ping-timeout", tunnel.DefaultKeepalive.Timeout, "drop an agent after this long without traffic")
	fs.DurationVar(&idleProbe, "idle-probe", 30*time.Second, "ask a router whether it still wants a request after this long without traffic from it")
	fs.StringVar(&keys, "credential-keys", os.Getenv("TETHER_CREDENTIAL_KEYS"), "public keys (PEM) that agent credentials may be signed with, comma-separated (two during a key rotation)")
	fs.StringVar(&registry, "registry-url", svc.EnvOr("TETHER_REGISTRY_URL", "http://127.0.0.1:8083"), "agent-registry base URL, for agents' enrollment")
	mtls.Register(fs, "")
	fs.DurationVar(&moveWait, "move-timeout", 10*time.Second, "on SIGTERM, how long to wait for agents to connect elsewhere before taking no more of their requests")
	fs.DurationVar(&natsGrace, "nats-grace", 3*time.Second, "how long the subscriber may be without NATS before it asks its agents to move")
	fs.Float64Var(&admitRate, "admit-rate", 500, "new agent streams taken a second at most, beyond which agents are told when to come back (a reconnect storm); 0: no bound")
	fs.IntVar(&admitBurst, "admit-burst", 1000, "new agent streams taken at once, beyond --admit-rate")
	fs.DurationVar(&heartbeat, "heartbeat-interval", 10*time.Second, "how often this subscriber renews its lease, which vouches to agent-registry for all its agent streams")
	fs.DurationVar(&reannounce, "reannounce-interval", 24*time.Hour, "how often every agent stream is announced again (jittered), so agent events older than this may age out of the AGENTS stream")
	_ = fs.Parse(os.Args[1:])
	id = svc.InstanceID(id)

	os.Exit(svc.Run("subscriber", common, func(ctx context.Context, env *svc.Env) error {
		if keys == "" {
			return errors.New("--credential-keys is required")
		}
		if serving.Enabled() == cleartext {
			return errors.New("give --tls-cert and --tls-key (agents connect over TLS), or --insecure-cleartext for a development machine, not both")
		}
		listener := svc.Listener{What: "agents", Addr: listen}
		if serving.Enabled() {
			server, err := tlsServer(&serving)
			if err != nil {
				return err
			}
			listener.Server, listener.TLS = server, true
		} else {
			env.Log.Warn("serving agents without TLS (--insecure-cleartext): credentials and requests cross the network readable")
		}
		verifier, err := agentcred.LoadVerifier(strings.Split(keys, ",")...)
		if err != nil {
			return err
		}
		nc, err := env.ConnectNATS(ctx, natsFlags, "subscriber-"+id)
		if err != nil {
			return err
		}
		// An event not stored, or whose ack never came, makes the
		// subscriber announce its streams again (ADR 014).
		events := &subscriber.JetStreamEvents{Log: env.Log}
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(10*time.Second),
			jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
				events.Lost()
				env.Log.Warn("agent event not stored", "subject", m.Subject, "err", err)
			}))
		if err != nil {
			return err
		}
		events.JS = js
		cat := clusters.NewProjection()
		follower, err := clusters.NewFollower(js, cat, env.Log)
		if err != nil {
			return err
		}
		srv, err := subscriber.New(subscriber.Config{
			ID: id, NATS: nc, Keepalive: ka, IdleProbe: idleProbe, Credentials: verifier, MoveTimeout: moveWait, NATSGrace: natsGrace,
			AdmitRate: admitRate, AdmitBurst: admitBurst,
			Clusters:    catalog{cat, follower},
			Events:      events,
			Instruments: env.Telemetry.Instruments(),
		})
		if err != nil {
			return err
		}
		cat.OnChange(func(c clusters.Change) {
			if c.Deleted {
				srv.Revoke(c.Cluster.ID, c.Cluster.UID)
			}
		})
		go srv.Vouch(ctx, heartbeat, reannounce)
		go follower.Run(ctx)
		// Not ready before the catalog is read: every agent would be
		// refused as revoked.
		env.Admin.AddCheck("clusters", follower.Ready)
		path, h := srv.Handler()
		mux := http.NewServeMux()
		mux.Handle(path, h)
		// The agents' endpoint is public (agents prove themselves with
		// credentials); calls to the registry carry this subscriber's
		// certificate when it has one.
		internal, err := mtls.Transport()
		if err != nil {
			return err
		}
		relay := subscriber.EnrollmentRelay{Registry: tetherv1connect.NewEnrollmentServiceClient(
			&http.Client{Transport: internal, Timeout: 30 * time.Second}, strings.TrimSuffix(registry, "/"))}
		// Enrollment messages are a token or two: anything bigger is refused
		// unread.
		mux.Handle(tetherv1connect.NewEnrollmentServiceHandler(relay, connect.WithReadMaxBytes(16<<10)))
		// On SIGTERM: stop taking requests, let those in flight finish, then
		// close the agents' streams so they reconnect to another subscriber.
		if listener.Server == nil {
			listener.Server = svc.H2CServer(mux)
		}
		listener.Server.Handler, listener.Drain = mux, srv.Drain
		if err := env.Serve(ctx, listener); err != nil {
			return err
		}
		return natsconn.Drain(nc, 5*time.Second)
	}))
}

// tlsServer serves agents over TLS with the HTTP/2 settings of the
// cleartext server: agents' streams are many and long, and a dead peer is
// found by pings.
func tlsServer(c *svc.ServingCert) (*http.Server, error) {
	cfg, err := c.Config()
	if err != nil {
		return nil, err
	}
	s := svc.H2CServer(nil)
	s.Protocols = nil
	s.TLSConfig = cfg
	return s, nil
}

// catalog is the cluster projection with the follower that fills it.
type catalog struct {
	*clusters.Projection
	*clusters.Follower
}
