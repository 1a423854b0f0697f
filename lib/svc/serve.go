package svc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/lib/natsconn"
)

// Listener says how a service serves its main endpoint.
type Listener struct {
	// What is served, for logs: "gateways", "agents", "clients".
	What   string
	Addr   string
	Server *http.Server
	// TLS serves with Server.TLSConfig.
	TLS bool
	// Drain, if set, runs first when ctx ends: the service's own way of
	// finishing in-flight work before the server shuts down.
	Drain func(ctx context.Context)
	// Hijacked, if set, runs after the server has shut down: it waits for
	// connections the server no longer tracks (upgraded ones) until ctx
	// ends, then closes them.
	Hijacked func(ctx context.Context)
}

// Serve serves l until ctx ends, then drains and shuts the server down
// within the shutdown timeout. Requests still open at the deadline (watches)
// are cut, and their clients reconnect.
func (env *Env) Serve(ctx context.Context, l Listener) error {
	ln, err := net.Listen("tcp", l.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", l.Addr, err)
	}
	scheme := "http"
	if l.TLS {
		scheme = "https"
	}
	env.Log.Info("serving "+l.What, "addr", scheme+"://"+ln.Addr().String())
	errc := make(chan error, 1)
	go func() {
		if l.TLS {
			errc <- l.Server.ServeTLS(ln, "", "")
		} else {
			errc <- l.Server.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", l.What, err)
	case <-ctx.Done():
	}
	dctx, cancel := context.WithTimeout(context.Background(), env.ShutdownTimeout)
	defer cancel()
	if l.Drain != nil {
		l.Drain(dctx)
	}
	if err := l.Server.Shutdown(dctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		env.Log.Warn("shutting down the "+l.What+" listener", "err", err)
	}
	if l.Hijacked != nil {
		l.Hijacked(dctx)
	}
	return nil
}

// EnvOr is the environment variable name, or def when it is unset.
func EnvOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// InstanceID is id, or host name and pid when id is empty: unique per
// process, stable in logs.
func InstanceID(id string) string {
	if id != "" {
		return id
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// ConnectNATS connects as name and makes /readyz depend on the connection.
func (env *Env) ConnectNATS(ctx context.Context, url, name string) (*nats.Conn, error) {
	nc, err := natsconn.Connect(ctx, natsconn.Options{URL: url, Name: name, Logger: env.Log, Registerer: env.Telemetry.Registry})
	if err != nil {
		return nil, err
	}
	env.Admin.AddCheck("nats", natsconn.Ready(nc))
	return nc, nil
}
