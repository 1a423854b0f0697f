// Package launch starts a router on a NATS connection of its own. The
// router binary serves it to gateways over the network; a gateway started
// with --router-url=embedded runs it in its own process and calls it
// through Client, which saves the gateway→router hop's HTTP/2, TLS,
// sockets and process switch (issue 15). The router's code is the same either way.
package launch

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tether-dev/tether/lib/clusters"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/router/internal/router"
)

// Options are a router's settings.
type Options struct {
	// ID names the router instance (its inbox subjects carry it).
	ID   string
	NATS svc.NATS
	cfg  router.Config
	// Window is the credit each call grants for response bytes;
	// NoAgentWait how long a request waits for an agent that is not
	// connected.
	Window      int
	NoAgentWait time.Duration
}

// Register adds the router's flags to fs, each name after prefix: "" for
// the router binary, "router-" for a gateway that embeds one. The NATS
// flags are the caller's to register (o.NATS.Register).
func (o *Options) Register(fs *flag.FlagSet, prefix string) {
	c := &o.cfg
	fs.IntVar(&o.Window, prefix+"window", tunnel.DefaultWindow, "credit per request for response bytes")
	fs.DurationVar(&o.NoAgentWait, prefix+"no-agent-wait", time.Second, "how long a request waits for a reconnecting agent, or for the router's NATS link, before 503")
	fs.DurationVar(&c.RetryWindow, prefix+"retry-window", 15*time.Second, "how long a request that lost its subscriber or agent keeps being sent again: reads before their answer, mutations (the agent remembers them by request id), watches from their last event (the client's own deadline still applies)")
	fs.IntVar(&c.RetryBodyLimit, prefix+"retry-body-limit", 1<<20, "the most of a request body kept for another attempt; a mutation with a larger body is not sent again")
	fs.DurationVar(&c.AckTimeout, prefix+"ack-timeout", 5*time.Second, "a request no subscriber answered or acknowledged within this is lost (and sent again where safe)")
	fs.DurationVar(&c.PeerProbe, prefix+"peer-probe", 2*time.Second, "check the agent stream of a call quiet for this long; one nobody listens on twice running, or that answers nothing for four of these, is gone")
	fs.DurationVar(&c.IdleProbe, prefix+"idle-probe", 30*time.Second, "check that the subscriber still has a request after this long without traffic")
	fs.IntVar(&c.InboxShards, prefix+"inbox-shards", 0, "NATS subscriptions the router's inbox is split into, each decoding its calls' frames on a goroutine of its own (0: one per core, GOMAXPROCS)")
}

// Router is a started router.
type Router struct {
	// Path and Handler serve ProxyService.
	Path    string
	Handler http.Handler
	nc      *nats.Conn
}

// Start connects to NATS as the router, follows the clusters' events (the
// process is not ready before it has read them: a cluster not read yet
// would get 404s) and starts the router, whose probes run until ctx ends.
func Start(ctx context.Context, env *svc.Env, o Options) (*Router, error) {
	nc, err := env.ConnectNATS(ctx, o.NATS, "router-"+o.ID)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("router: %w", err)
	}
	cat, follower, err := clusters.Start(ctx, js, env.Log)
	if err != nil {
		nc.Close()
		return nil, err
	}
	env.Admin.AddCheck("clusters", follower.Ready)
	cfg := o.cfg
	cfg.ID, cfg.NATS, cfg.NATSUser, cfg.Catalog, cfg.Window, cfg.NoAgentWait = o.ID, nc, o.NATS.User, cat, o.Window, o.NoAgentWait
	cfg.Instruments = env.Telemetry.Instruments()
	srv, err := router.New(cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	go srv.Run(ctx)
	path, h := tetherv1connect.NewProxyServiceHandler(srv, tunnel.HandlerOptions())
	return &Router{Path: path, Handler: h, nc: nc}, nil
}

// Drain drains the router's NATS connection: call it once nothing calls
// the router any more.
func (r *Router) Drain() error { return natsconn.Drain(r.nc, 5*time.Second) }

// Client is a ProxyService client that calls the router's handler in this
// process, without HTTP/2, TLS or sockets in between (handlerTransport);
// close refuses later calls.
func (r *Router) Client() (client tetherv1connect.ProxyServiceClient, close func()) {
	mux := http.NewServeMux()
	mux.Handle(r.Path, r.Handler)
	t := &handlerTransport{h: mux}
	return tetherv1connect.NewProxyServiceClient(&http.Client{Transport: t}, "http://router.in-process", tunnel.ClientOptions()), t.close
}
