// Command subscriber holds agents' streams and relays the requests that
// routers publish on NATS for those agents' clusters.
//
//	subscriber --listen :8443 --nats-url nats://127.0.0.1:4222
package main

import (
	"context"
	"flag"
	"net/http"
	"os"
	"time"

	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/subscriber/internal/subscriber"
)

func main() {
	var (
		common    svc.Common
		listen    string
		natsFlags svc.NATS
		id        string
		ka        tunnel.Keepalive
		idleProbe time.Duration
	)
	fs := flag.NewFlagSet("subscriber", flag.ExitOnError)
	common.Register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:8081", "address agents connect to")
	natsFlags.Register(fs)
	fs.StringVar(&id, "id", svc.EnvOr("TETHER_SUBSCRIBER_ID", ""), "instance id; default: host name and pid")
	fs.DurationVar(&ka.Interval, "ping-interval", tunnel.DefaultKeepalive.Interval, "ping an agent after this long without traffic")
	fs.DurationVar(&ka.Timeout, "ping-timeout", tunnel.DefaultKeepalive.Timeout, "drop an agent after this long without traffic")
	fs.DurationVar(&idleProbe, "idle-probe", 30*time.Second, "ask a router whether it still wants a request after this long without traffic from it")
	_ = fs.Parse(os.Args[1:])
	id = svc.InstanceID(id)

	os.Exit(svc.Run("subscriber", common, func(ctx context.Context, env *svc.Env) error {
		nc, err := env.ConnectNATS(ctx, natsFlags, "subscriber-"+id)
		if err != nil {
			return err
		}
		srv, err := subscriber.New(subscriber.Config{
			ID: id, NATS: nc, Keepalive: ka, IdleProbe: idleProbe,
			Instruments: env.Telemetry.Instruments(),
		})
		if err != nil {
			return err
		}
		path, h := tetherv1connect.NewTunnelServiceHandler(srv, tunnel.HandlerOptions())
		mux := http.NewServeMux()
		mux.Handle(path, h)
		// On SIGTERM: stop taking requests, let those in flight finish, then
		// close the agents' streams so they reconnect to another subscriber.
		if err := env.Serve(ctx, svc.Listener{What: "agents", Addr: listen, Server: svc.H2CServer(mux), Drain: srv.Drain}); err != nil {
			return err
		}
		return natsconn.Drain(nc, 5*time.Second)
	}))
}
