package svc

import (
	"context"
	"flag"
	"os"

	"github.com/tether-dev/tether/lib/natsconn"
)

// RunPlaceholder is the whole main of a service whose issue has not come
// yet: it parses the common flags and --nats-url, connects to NATS, is ready
// once connected, logs what it is waiting to become, and drains on SIGTERM.
// It returns the exit code.
func RunPlaceholder(name, purpose string) int {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	var common Common
	common.Register(fs)
	var n NATS
	n.Register(fs)
	_ = fs.Parse(os.Args[1:])
	return Run(name, common, func(ctx context.Context, env *Env) error {
		nc, err := env.ConnectNATS(ctx, n, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil // told to stop before NATS was reachable
			}
			return err
		}
		env.Log.Info("placeholder: connected to NATS; not yet " + purpose)
		<-ctx.Done()
		return natsconn.Drain(nc, env.ShutdownTimeout)
	})
}
