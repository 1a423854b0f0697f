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
		readRetry   time.Duration
		idleProbe   time.Duration
		mtls        svc.MTLS
	)
	fs := flag.NewFlagSet("router", flag.ExitOnError)
	common.Register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:8082", "address gateways connect to")
	natsFlags.Register(fs)
	fs.StringVar(&id, "id", os.Getenv("TETHER_ROUTER_ID"), "instance id; default: host name and pid")
	fs.IntVar(&window, "window", tunnel.DefaultWindow, "credit per request for response bytes")
	fs.DurationVar(&noAgentWait, "no-agent-wait", time.Second, "how long a request waits for a reconnecting agent before 503")
	fs.DurationVar(&readRetry, "read-retry", 10*time.Second, "how long a read that lost its subscriber or agent before any answer is sent again (the client's own deadline still applies)")
	fs.DurationVar(&idleProbe, "idle-probe", 30*time.Second, "check that the subscriber still has a request after this long without traffic")
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
		srv, err := router.New(router.Config{
			ID: id, NATS: nc, Catalog: cat, Window: window, NoAgentWait: noAgentWait, ReadRetry: readRetry, IdleProbe: idleProbe,
			Instruments: env.Telemetry.Instruments(),
		})
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
