// Package natsconn connects a service to NATS the way every Tether service
// must: reconnect forever with jittered backoff, keep the link alive with
// pings, report reconnects, and fail fast rather than buffer while the link
// is down.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tether-dev/tether/lib/backoff"
)

// Options configure Connect.
type Options struct {
	URL    string
	Name   string
	Logger *slog.Logger
	// Registerer gets tether_nats_reconnects_total and
	// tether_nats_disconnects_total.
	Registerer prometheus.Registerer
	// Extra options, after ours (credentials, TLS).
	Extra []nats.Option
}

// Connect dials NATS. It returns once connected the first time or when ctx
// ends; after that the connection heals itself for as long as it lives.
//
// Policy while disconnected: publishes go into a 4 MiB buffer, sent on
// reconnect, and fail at once with nats.ErrReconnectBufExceeded beyond it;
// events (agent heartbeats) ride that out. The request path does not: its
// frames may be lost with the link, so routers and subscribers reset what
// was in flight when the link drops (OnDisconnect) and their retry rules
// send it again once it is back, and a new request waits for the link at
// most --no-agent-wait before it is answered 503. Nothing waits silently.
//
// A dead link is noticed within 6 to 8 s (a ping every 2 s, three
// unanswered, and no write may block longer than 4 s): a partition gives
// no error, only silence.
func Connect(ctx context.Context, o Options) (*nats.Conn, error) {
	if o.URL == "" || o.Name == "" || o.Logger == nil || o.Registerer == nil {
		return nil, errors.New("natsconn: URL, Name, Logger and Registerer are required")
	}
	reconnects := prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_nats_reconnects_total", Help: "Times the NATS connection came back after a loss."})
	disconnects := prometheus.NewCounter(prometheus.CounterOpts{Name: "tether_nats_disconnects_total", Help: "Times the NATS connection was lost."})
	for _, c := range []prometheus.Collector{reconnects, disconnects} {
		if err := o.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("natsconn: registering metrics: %w", err)
		}
	}
	// The reconnect loop and the reconnect callback run on different
	// goroutines; both touch the backoff.
	var mu sync.Mutex
	b := backoff.Default()
	b.Max = 5 * time.Second
	log := o.Logger.With("nats", o.URL)
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.CustomReconnectDelay(func(int) time.Duration {
			mu.Lock()
			defer mu.Unlock()
			return b.Next()
		}),
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(3),
		// A write into a link that went silent blocks once the kernel's
		// buffer is full, and the pings cannot be checked meanwhile (they
		// wait for the same lock): nats.go's default minute would hide a
		// partition for as long.
		nats.FlusherTimeout(4 * time.Second),
		nats.ReconnectBufSize(4 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			disconnects.Inc()
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			mu.Lock()
			b.Reset()
			mu.Unlock()
			reconnects.Inc()
			log.Info("nats reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "err", err)
		}),
	}
	nc, err := nats.Connect(o.URL, append(opts, o.Extra...)...)
	if err != nil {
		return nil, fmt.Errorf("natsconn: connecting to %s: %w", o.URL, err)
	}
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, fmt.Errorf("natsconn: connecting to %s: %w", o.URL, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	log.Info("nats connected")
	return nc, nil
}

// OnDisconnect adds fn to what runs when nc loses its server, after what
// Connect set up (the log line and the counter). Call it before traffic.
func OnDisconnect(nc *nats.Conn, fn func()) {
	prev := nc.DisconnectErrHandler()
	nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
		if prev != nil {
			prev(c, err)
		}
		fn()
	})
}

// OnReconnect adds fn to what runs when nc is connected again; nats.go has
// restored every subscription by then.
func OnReconnect(nc *nats.Conn, fn func()) {
	prev := nc.ReconnectHandler()
	nc.SetReconnectHandler(func(c *nats.Conn) {
		if prev != nil {
			prev(c)
		}
		fn()
	})
}

// Ready is an admin readiness check for nc.
func Ready(nc *nats.Conn) func(context.Context) error {
	return func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("nats %s", nc.Status())
		}
		return nil
	}
}

// Drain lets nc deliver what its subscriptions already received and
// publish what is buffered, then closes it; after timeout it just closes.
func Drain(nc *nats.Conn, timeout time.Duration) error {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("natsconn: draining: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for !nc.IsClosed() {
		if time.Now().After(deadline) {
			nc.Close()
			return errors.New("natsconn: drain timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}
