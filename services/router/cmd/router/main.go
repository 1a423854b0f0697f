// Command router takes client requests from gateways (ProxyService) and
// sends each over NATS to the subscriber holding the cluster's agent. Which
// clusters exist, and whose they are, it reads from the cluster events on
// JetStream (agent-registry writes them). A gateway can run the same
// router in its own process instead (gateway --router-url=embedded).
//
//	router --listen 127.0.0.1:8082 --nats-url nats://127.0.0.1:4222
package main

import (
	"context"
	"flag"
	"net/http"
	"os"

	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/services/router/launch"
)

func main() {
	var (
		common svc.Common
		listen string
		opts   launch.Options
		mtls   svc.MTLS
	)
	fs := flag.NewFlagSet("router", flag.ExitOnError)
	common.Register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:8082", "address gateways connect to")
	opts.NATS.Register(fs)
	fs.StringVar(&opts.ID, "id", os.Getenv("TETHER_ROUTER_ID"), "instance id; default: host name and pid")
	opts.Register(fs, "")
	mtls.Register(fs, "gateway")
	_ = fs.Parse(os.Args[1:])
	opts.ID = svc.InstanceID(opts.ID)

	os.Exit(svc.Run("router", common, func(ctx context.Context, env *svc.Env) error {
		r, err := launch.Start(ctx, env, opts)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle(r.Path, r.Handler)
		// Only gateways, by their certificates, when mTLS is configured.
		server, tlsOn, err := mtls.Server(mux)
		if err != nil {
			return err
		}
		if err := env.Serve(ctx, svc.Listener{What: "gateways", Addr: listen, Server: server, TLS: tlsOn}); err != nil {
			return err
		}
		return r.Drain()
	}))
}
