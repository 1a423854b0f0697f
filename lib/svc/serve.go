package svc

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/lib/natsconn"
	"github.com/tether-dev/tether/lib/subject"
)

// Listener says how a service serves its main endpoint.
type Listener struct {
	// What is served, for logs: "gateways", "agents", "clients".
	What   string
	Addr   string
	Server *http.Server
	// TLS serves with Server.TLSConfig.
	TLS bool
	// Wrap, if set, wraps the listener (a bound on connections).
	Wrap func(net.Listener) net.Listener
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
	if l.Wrap != nil {
		ln = l.Wrap(ln)
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

// NATS are the flags of a service that connects to NATS.
type NATS struct {
	URL          string
	User         string
	PasswordFile string
	// TokenFile, instead of PasswordFile, holds a projected ServiceAccount
	// token that the NATS auth callout reviews (services/nats-auth): User
	// is then this pod's name. It is read again at every connect, as the
	// kubelet rotates it.
	TokenFile string
	// CAFile, if set, makes the connection TLS, trusting this CA.
	CAFile string
}

// Register adds --nats-url, --nats-user and --nats-password-file to fs.
func (n *NATS) Register(fs *flag.FlagSet) {
	fs.StringVar(&n.URL, "nats-url", EnvOr("TETHER_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL")
	fs.StringVar(&n.User, "nats-user", os.Getenv("TETHER_NATS_USER"), "NATS user (its permissions say what this service may publish and subscribe to); empty: none")
	fs.StringVar(&n.PasswordFile, "nats-password-file", os.Getenv("TETHER_NATS_PASSWORD_FILE"), "file holding the NATS user's password, so it shows in no process list")
	fs.StringVar(&n.TokenFile, "nats-token-file", os.Getenv("TETHER_NATS_TOKEN_FILE"), "instead of a password: this pod's projected ServiceAccount token, which the NATS auth callout reviews; --nats-user is then the pod's name")
	fs.StringVar(&n.CAFile, "nats-ca-file", os.Getenv("TETHER_NATS_CA_FILE"), "CA of the NATS servers' certificates: connect with TLS (required where NATS is on another machine)")
}

// ConnectNATS connects as name and makes /readyz depend on the connection.
func (env *Env) ConnectNATS(ctx context.Context, n NATS, name string) (*nats.Conn, error) {
	var extra []nats.Option
	if n.User != "" {
		if !subject.ValidToken(n.User) {
			return nil, fmt.Errorf("NATS user %q must match [A-Za-z0-9_-]{1,64}: it names the user's inbox", n.User)
		}
		secret := n.PasswordFile
		if n.TokenFile != "" {
			if n.PasswordFile != "" {
				return nil, errors.New("--nats-password-file and --nats-token-file: one or the other")
			}
			secret = n.TokenFile
		}
		pw, err := os.ReadFile(secret)
		if err != nil {
			return nil, fmt.Errorf("reading the NATS password or token: %w", err)
		}
		login := nats.UserInfo(n.User, strings.TrimSpace(string(pw)))
		if n.TokenFile != "" {
			// The kubelet replaces the token before it expires; a
			// reconnect must present the current one.
			user, last := n.User, strings.TrimSpace(string(pw))
			login = nats.UserInfoHandler(func() (string, string) {
				if b, err := os.ReadFile(secret); err == nil {
					last = strings.TrimSpace(string(b))
				}
				return user, last
			})
		}
		// Replies (JetStream's API among them) come to an inbox only this
		// user may read: another service never sees them (ADR 012).
		extra = append(extra, login, nats.CustomInboxPrefix(subject.Inbox(n.User)))
	}
	if n.CAFile != "" {
		// The password crosses the network only inside TLS.
		extra = append(extra, nats.RootCAs(n.CAFile))
	}
	nc, err := natsconn.Connect(ctx, natsconn.Options{URL: n.URL, Name: name, Logger: env.Log, Registerer: env.Telemetry.Registry, Extra: extra})
	if err != nil {
		return nil, err
	}
	env.Admin.AddCheck("nats", natsconn.Ready(nc))
	return nc, nil
}
