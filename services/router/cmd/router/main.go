// Command router takes client requests from gateways (ProxyService) and
// sends each over NATS to the subscriber holding the cluster's agent. Which
// clusters exist, and whose they are, it reads from the cluster events on
// JetStream (agent-registry writes them).
//
//	router --listen 127.0.0.1:8082 --nats-url nats://127.0.0.1:4222
package main

import (
	"context"
	"flag"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tether-dev/tether/lib/clusters"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/router/internal/router"
)

func main() {
	var (
		common      svc.Common
		listen      string
		natsFlags   svc.NATS
		id          string
		window      int
		noAgentWait time.Duration
		cfg         router.Config
		mtls        svc.MTLS
	)
	fs := flag.NewFlagSet("router", flag.ExitOnError)
	common.Register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:8082", "address gateways connect to")
	natsFlags.Register(fs)
	fs.StringVar(&id, "id", os.Getenv("TETHER_ROUTER_ID"), "instance id; default: host name and pid")
	fs.IntVar(&window, "window", tunnel.DefaultWindow, "credit per request for response bytes")
	fs.DurationVar(&noAgentWait, "no-agent-wait", time.Second, "how long a request waits for a reconnecting agent, or for the router's NATS link, before 503")
	fs.DurationVar(&cfg.RetryWindow, "retry-window", 15*time.Second, "how long a request that lost its subscriber or agent keeps being sent again: reads before their answer, mutations (the agent remembers them by request id), watches from their last event (the client's own deadline still applies)")
	fs.IntVar(&cfg.RetryBodyLimit, "retry-body-limit", 1<<20, "the most of a request body kept for another attempt; a mutation with a larger body is not sent again")
	fs.DurationVar(&cfg.AckTimeout, "ack-timeout", 5*time.Second, "a request no subscriber answered or acknowledged within this is lost (and sent again where safe)")
	fs.DurationVar(&cfg.PeerProbe, "peer-probe", 2*time.Second, "check the agent stream of a call quiet for this long; one nobody listens on twice running, or that answers nothing for four of these, is gone")
	fs.DurationVar(&cfg.IdleProbe, "idle-probe", 30*time.Second, "check that the subscriber still has a request after this long without traffic")
	fs.IntVar(&cfg.InboxShards, "inbox-shards", 0, "NATS subscriptions the router's inbox is split into, each decoding its calls' frames on a goroutine of its own (0: one per core, GOMAXPROCS)")
	mtls.Register(fs, "gateway")
	_ = fs.Parse(os.Args[1:])
	id = svc.InstanceID(id)

	os.Exit(svc.Run("router", common, func(ctx context.Context, env *svc.Env) error {
		nc, err := env.ConnectNATS(ctx, natsFlags, "router-"+id)
		if err != nil {
			return err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		cat, follower, err := clusters.Start(ctx, js, env.Log)
		if err != nil {
			return err
		}
		// Not ready before the catalog is read: a cluster not read yet
		// would get 404s.
		env.Admin.AddCheck("clusters", follower.Ready)
		cfg.ID, cfg.NATS, cfg.NATSUser, cfg.Catalog, cfg.Window, cfg.NoAgentWait = id, nc, natsFlags.User, cat, window, noAgentWait
		cfg.Instruments = env.Telemetry.Instruments()
		srv, err := router.New(cfg)
		if err != nil {
			return err
		}
		go srv.Run(ctx)
		path, h := tetherv1connect.NewProxyServiceHandler(srv, tunnel.HandlerOptions())
		mux := http.NewServeMux()
		mux.Handle(path, h)
		// Only gateways, by their certificates, when mTLS is configured.
		server, tlsOn, err := mtls.Server(mux)
		if err != nil {
			return err
		}
		if err := env.Serve(ctx, svc.Listener{What: "gateways", Addr: listen, Server: server, TLS: tlsOn}); err != nil {
			return err
		}
		return natsconn.Drain(nc, 5*time.Second)
	}))
}
