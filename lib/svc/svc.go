// Package svc is the life cycle every Tether binary shares: flags for
// telemetry and the admin endpoint, a context that ends on SIGTERM or
// SIGINT, and an orderly drain before exit.
package svc

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/tether-dev/tether/lib/admin"
	"github.com/tether-dev/tether/lib/telemetry"
)

// Version is set at link time.
var Version = "dev"

// Common are the flags every service has.
type Common struct {
	AdminAddr       string
	LogLevel        string
	LogFormat       string
	OTLPEndpoint    string
	ShutdownTimeout time.Duration
	Pprof           bool
	GCPercent       int
}

// Register adds the common flags to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.AdminAddr, "admin-addr", "127.0.0.1:0", "address of /healthz, /readyz and /metrics")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json or text")
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"), "OTLP/HTTP endpoint for traces; empty keeps them in-process")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight work may take to finish after SIGTERM")
	fs.IntVar(&c.GCPercent, "gc-percent", 0, "GOGC for this process; 0 keeps the runtime's (GOGC or 100). Higher trades memory for CPU: make bench saw 400 cut GC work but add 15-20 MiB while streaming")
	fs.BoolVar(&c.Pprof, "pprof", os.Getenv("TETHER_PPROF") != "", "serve runtime profiles under /debug/pprof/ on the admin address")
}

// Env is what a service's run func gets.
type Env struct {
	Telemetry *telemetry.Telemetry
	Log       *slog.Logger
	Admin     *admin.Server
	// ShutdownTimeout bounds the drain after ctx ends.
	ShutdownTimeout time.Duration
}

// Run sets up telemetry and the admin endpoint, then calls run with a
// context that ends on SIGTERM or SIGINT. run must drain and return once
// that context ends; it then has ShutdownTimeout. Run returns the exit code.
func Run(name string, c Common, run func(ctx context.Context, env *Env) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if c.GCPercent != 0 {
		debug.SetGCPercent(c.GCPercent)
	}
	tel, err := telemetry.Setup(ctx, telemetry.Options{
		Service: name, Version: Version, LogLevel: c.LogLevel, LogFormat: c.LogFormat,
		LogOutput: os.Stderr, OTLPEndpoint: c.OTLPEndpoint,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 2
	}
	log := tel.Logger
	adm, err := admin.New(c.AdminAddr, tel.Registry, c.Pprof)
	if err != nil {
		log.Error("starting admin endpoint", "err", err)
		return 1
	}
	go func() {
		if err := adm.Serve(); err != nil {
			log.Error("admin endpoint failed", "err", err)
		}
	}()
	log.Info("starting", "version", Version, "admin", adm.Addr())

	// The admin endpoint outlives run so /readyz says "draining" meanwhile.
	go func() {
		<-ctx.Done()
		adm.SetDraining()
		log.Info("shutting down", "timeout", c.ShutdownTimeout)
	}()
	code := 0
	if err := run(ctx, &Env{Telemetry: tel, Log: log, Admin: adm, ShutdownTimeout: c.ShutdownTimeout}); err != nil {
		log.Error("exiting on error", "err", err)
		code = 1
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = adm.Shutdown(sctx)
	_ = tel.Shutdown(sctx)
	log.Info("stopped")
	return code
}

// H2CTransport is the transport between Tether's own services: HTTP/2
// without TLS for the development stack, so one connection multiplexes
// every stream. Production configurations use TLS (mTLS) instead.
func H2CTransport() *http.Transport {
	t := &http.Transport{
		ForceAttemptHTTP2: true,
		MaxIdleConns:      100,
		IdleConnTimeout:   90 * time.Second,
		HTTP2: &http.HTTP2Config{
			// Detect a dead peer even while no stream is active.
			SendPingTimeout: 10 * time.Second,
			PingTimeout:     5 * time.Second,
		},
	}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}

// MaxStreamsPerConn is the most concurrent streams a Tether server takes
// on one HTTP/2 connection (Go's own default).
const MaxStreamsPerConn = 250

// H2CServer returns a server for h speaking HTTP/2 without TLS.
func H2CServer(h http.Handler) *http.Server {
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		HTTP2: &http.HTTP2Config{
			// Go's HTTP/2 server looks through every stream of a connection
			// for the next frame to write, idle ones included: 10,000
			// watches on one gateway-to-router connection made that half
			// of the router's CPU (ADR 016). Clients open another
			// connection past this many streams.
			MaxConcurrentStreams: MaxStreamsPerConn,
			SendPingTimeout:      10 * time.Second,
			PingTimeout:          5 * time.Second,
		},
	}
	s.Protocols = new(http.Protocols)
	s.Protocols.SetUnencryptedHTTP2(true)
	s.Protocols.SetHTTP1(true)
	return s
}
