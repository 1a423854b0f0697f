// Package admin serves what operators and Kubernetes probe on every service:
// /healthz (the process is alive), /readyz (its dependencies are) and
// /metrics.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether one dependency is ready.
type Check func(ctx context.Context) error

// Server is the admin endpoint of a service.
type Server struct {
	mu       sync.Mutex
	checks   map[string]Check
	draining atomic.Bool
	srv      *http.Server
	ln       net.Listener
}

// New listens on addr (host:port; port 0 picks one) and serves the admin
// endpoints. Checks added with AddCheck decide /readyz. With pprof, the
// runtime profiles are served under /debug/pprof/ too.
func New(addr string, reg *prometheus.Registry, pprof bool) (*Server, error) {
	if reg == nil {
		return nil, errors.New("admin: a metrics registry is required")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listening on %s: %w", addr, err)
	}
	s := &Server{checks: map[string]Check{}, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if pprof {
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// AddCheck makes /readyz depend on check.
func (s *Server) AddCheck(name string, check Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = check
}

// Addr is where the server listens.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve blocks until Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// SetDraining makes /readyz fail so load balancers stop sending work while
// the service finishes what it has.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Shutdown stops the server.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	s.mu.Lock()
	checks := make(map[string]Check, len(s.checks))
	names := make([]string, 0, len(s.checks))
	for n, c := range s.checks {
		checks[n] = c
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	var b strings.Builder
	ok := true
	if s.draining.Load() {
		ok = false
		b.WriteString("[-] draining\n")
	}
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			ok = false
			fmt.Fprintf(&b, "[-] %s: %v\n", n, err)
		} else {
			fmt.Fprintf(&b, "[+] %s ok\n", n)
		}
	}
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(b.String()))
}
