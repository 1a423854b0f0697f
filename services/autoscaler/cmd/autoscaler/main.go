// Command autoscaler will scale Tether's subscribers to match their load.
//
// For now it is a skeleton: it connects to NATS, serves the admin endpoint
// and drains on SIGTERM.
package main

import (
	"context"
	"flag"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/svc"
)

const name = "autoscaler"

func main() {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	var common svc.Common
	common.Register(fs)
	natsURL := fs.String("nats-url", envOr("TETHER_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL")
	_ = fs.Parse(os.Args[1:])

	os.Exit(svc.Run(name, common, func(ctx context.Context, env *svc.Env) error {
		closed := make(chan struct{})
		nc, err := natsconn.Connect(ctx, natsconn.Options{
			URL: *natsURL, Name: name, Logger: env.Log, Registerer: env.Telemetry.Registry,
			Extra: []nats.Option{nats.ClosedHandler(func(*nats.Conn) { close(closed) })},
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil // stopped before NATS was reachable
			}
			return err
		}
		env.Admin.AddCheck("nats", natsconn.Ready(nc))
		env.Log.Info("skeleton: scaling subscribers is not implemented yet")

		<-ctx.Done()
		if err := nc.Drain(); err != nil {
			env.Log.Warn("draining nats", "err", err)
			nc.Close()
		}
		select {
		case <-closed:
		case <-time.After(env.ShutdownTimeout):
			env.Log.Warn("nats drain timed out", "timeout", env.ShutdownTimeout)
			nc.Close()
		}
		return nil
	}))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
