// Command agentsim runs a fleet of simulated agents in one process, for
// load and capacity tests (loadtest/). Each one is the real agent
// (services/agent/internal/agent) with its kube-apiserver replaced by an
// in-memory cluster (internal/fakekube): it enrolls with its own bootstrap
// token, keeps and renews its credential, holds its streams on TCP
// connections of its own, answers pings, follows GoAway and reconnects
// with the agent's own backoff, and checks every request's signed
// identity. Only the cluster behind it is simulated.
//
// It first ensures its clusters through the gateway's ClusterService, as
// an operator would (EnsureClusters: a thousand a call), then starts the
// agents at --start-rate:
//
//	agentsim --gateway-url https://127.0.0.1:8443 --gateway-ca ca.crt --token-file admin.token \
//	  --subscriber-url https://127.0.0.1:8081 --subscriber-ca ca.crt --identity-root-key root.pub \
//	  --agents 10000 --prefix sim --tenant acme
//
// /readyz passes once every agent holds a stream; tether_agentsim_agents
// counts them by state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tether-dev/tether/lib/assertion"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/lib/telemetry"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/agent/internal/agent"
	"github.com/tether-dev/tether/services/agent/internal/dial"
	"github.com/tether-dev/tether/services/agent/internal/fakekube"
)

func main() {
	var (
		common     svc.Common
		gatewayURL string
		gatewayCA  string
		tokenFile  string
		subURL     string
		subCA      string
		rootKey    string
		n          int
		first      int
		prefix     string
		tenant     string
		streams    int
		startRate  float64
		ka         tunnel.Keepalive
		kube       fakekube.Config
	)
	fs := flag.NewFlagSet("agentsim", flag.ExitOnError)
	common.Register(fs)
	fs.StringVar(&gatewayURL, "gateway-url", "", "the gateway, whose ClusterService creates the clusters")
	fs.StringVar(&gatewayCA, "gateway-ca", "", "PEM file of the CA of the gateway's certificate")
	fs.StringVar(&tokenFile, "token-file", "", "file holding the bearer token of a platform administrator (--admin-group at the gateway)")
	fs.StringVar(&subURL, "subscriber-url", "", "the subscribers, comma-separated, as for the agent")
	fs.StringVar(&subCA, "subscriber-ca", "", "PEM file of CAs trusted for the subscribers' certificates")
	fs.StringVar(&rootKey, "identity-root-key", "", "PEM file of the identity root's public key, as for the agent")
	fs.IntVar(&n, "agents", 100, "simulated agents, each serving a cluster of its own")
	fs.StringVar(&prefix, "prefix", "sim", "cluster ids are PREFIX-00000, PREFIX-00001, ...")
	fs.IntVar(&first, "first", 0, "the first cluster's number: several agentsim processes share a fleet (one process holds two connections per agent, and a process's open files are limited)")
	fs.StringVar(&tenant, "tenant", "acme", "the clusters' tenant")
	fs.IntVar(&streams, "streams", 2, "streams each agent holds")
	fs.Float64Var(&startRate, "start-rate", 200, "agents started per second")
	fs.DurationVar(&ka.Interval, "ping-interval", tunnel.DefaultKeepalive.Interval, "as for the agent")
	fs.DurationVar(&ka.Timeout, "ping-timeout", tunnel.DefaultKeepalive.Timeout, "as for the agent")
	fs.IntVar(&kube.Objects, "objects", 10, "ConfigMaps each namespace of each simulated cluster starts with")
	fs.IntVar(&kube.ObjectBytes, "object-bytes", 256, "bytes of data in each of them")
	fs.DurationVar(&kube.ServiceTime, "service-time", 0, "how long each simulated kube-apiserver answer takes to start")
	fs.DurationVar(&kube.WatchEvery, "watch-every", time.Second, "one event per watch this often (0: quiet watches)")
	_ = fs.Parse(os.Args[1:])

	os.Exit(svc.Run("agentsim", common, func(ctx context.Context, env *svc.Env) error {
		switch {
		case n < 1 || n > 100000 || first < 0 || first+n > 100000:
			return fmt.Errorf("--agents %d from --first %d: 1 to 100,000 clusters, numbered below 100,000", n, first)
		case gatewayURL == "" || tokenFile == "" || subURL == "" || rootKey == "":
			return errors.New("--gateway-url, --token-file, --subscriber-url and --identity-root-key are required")
		case startRate <= 0:
			return errors.New("--start-rate must be positive")
		}
		fleet, err := fakekube.NewFleet(kube)
		if err != nil {
			return err
		}
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("%s-%05d", prefix, first+i)
		}
		// Not ready until every agent holds a stream; the check is there
		// before anything else, so nobody reads readiness too early.
		var ready atomic.Pointer[simulation]
		env.Admin.AddCheck("fleet", func(context.Context) error {
			sim := ready.Load()
			if sim == nil {
				return errors.New("making the clusters")
			}
			if c := sim.connected(); c < n {
				return fmt.Errorf("%d of %d agents hold a stream", c, n)
			}
			return nil
		})
		start := time.Now()
		tokens, err := ensureClusters(ctx, gatewayURL, gatewayCA, tokenFile, tenant, ids)
		if err != nil {
			return err
		}
		env.Log.Info("clusters ensured", "clusters", n, "took", time.Since(start).Round(time.Millisecond))

		sim := &simulation{log: env.Log, urls: strings.Split(subURL, ","), caFile: subCA, rootKey: rootKey, tenant: tenant,
			streams: streams, keepalive: ka, fleet: fleet}
		if err := env.Telemetry.Registry.Register(sim.collector()); err != nil {
			return err
		}
		ready.Store(sim)
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Duration(float64(time.Second) / startRate))
		defer tick.Stop()
		for i, id := range ids {
			if i > 0 {
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
			if ctx.Err() != nil {
				break
			}
			a, err := sim.agent(id, tokens[i])
			if err != nil {
				return fmt.Errorf("agent of %s: %w", id, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := a.Run(ctx, env.ShutdownTimeout); err != nil && ctx.Err() == nil {
					env.Log.Error("a simulated agent stopped", "cluster_id", id, "err", err)
				}
			}()
		}
		env.Log.Info("agents started", "agents", len(sim.agents()), "took", time.Since(start).Round(time.Millisecond))
		wg.Wait()
		return nil
	}))
}

// ensureClusters creates the clusters, or gives existing ones new
// bootstrap tokens, a thousand a call, and returns the tokens in ids'
// order.
func ensureClusters(ctx context.Context, gatewayURL, caFile, tokenFile, tenant string, ids []string) ([]string, error) {
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	roots, err := dial.Roots(caFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig.RootCAs = roots
	tr.ForceAttemptHTTP2 = true
	client := tetherv1connect.NewClusterServiceClient(&http.Client{Transport: tr, Timeout: 2 * time.Minute}, gatewayURL)
	out := make([]string, 0, len(ids))
	for lo := 0; lo < len(ids); lo += 1000 {
		hi := min(lo+1000, len(ids))
		req := &tetherv1.EnsureClustersRequest{}
		for _, id := range ids[lo:hi] {
			req.Clusters = append(req.Clusters, &tetherv1.CreateClusterRequest{Id: id, Tenant: tenant})
		}
		creq := connect.NewRequest(req)
		creq.Header().Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := client.EnsureClusters(ctx, creq)
		if err != nil {
			return nil, fmt.Errorf("ensuring clusters %s to %s: %w", ids[lo], ids[hi-1], err)
		}
		for _, c := range resp.Msg.GetClusters() {
			out = append(out, c.GetBootstrap().GetToken())
		}
	}
	if len(out) != len(ids) {
		return nil, fmt.Errorf("%d bootstrap tokens for %d clusters", len(out), len(ids))
	}
	return out, nil
}

// simulation makes the agents and keeps count of them.
type simulation struct {
	log       *slog.Logger
	urls      []string
	caFile    string
	rootKey   string
	tenant    string
	streams   int
	keepalive tunnel.Keepalive
	fleet     *fakekube.Fleet

	mu  sync.Mutex
	all []*agent.Agent
}

// agent is the real agent for cluster id, with a simulated cluster behind
// it, its own TCP connections, and its own identity verifier (each agent
// process makes its own key for the gateway's MACs).
func (s *simulation) agent(id, bootstrap string) (*agent.Agent, error) {
	out, err := dial.Transport(dial.Config{URLs: s.urls, CAFile: s.caFile})
	if err != nil {
		return nil, err
	}
	subscriber := &http.Client{Transport: out}
	var enrollers []tetherv1connect.EnrollmentServiceClient
	for _, u := range s.urls {
		enrollers = append(enrollers, tetherv1connect.NewEnrollmentServiceClient(&http.Client{Transport: out, Timeout: 30 * time.Second}, u))
	}
	enrollment, err := agent.NewEnrollment(enrollers...)
	if err != nil {
		return nil, err
	}
	verifier, err := assertion.LoadVerifier(s.rootKey)
	if err != nil {
		return nil, err
	}
	log := s.log.With("cluster_id", id)
	cluster := s.fleet.Cluster()
	a, err := agent.New(agent.Config{
		ClusterID:      id,
		SubscriberURLs: s.urls,
		Subscriber:     subscriber,
		Credentials: &agent.Credentials{ClusterID: id, Bootstrap: func() (string, error) { return bootstrap, nil },
			Store: &memoryStore{}, Enrollment: enrollment, Log: log},
		APIServer:     "https://" + id + ".sim.invalid",
		APITransport:  cluster,
		AccessReviews: cluster,
		Admission:     agent.Admission{Verifier: verifier, Tenant: s.tenant},
		Streams:       s.streams,
		Keepalive:     s.keepalive,
		Version:       svc.Version,
		// One process holds thousands of agents: their own metrics would
		// cost more than they tell; the simulation counts what matters.
		Instruments: telemetry.Instruments{Logger: log, Registerer: discard{}, Tracer: noop.NewTracerProvider().Tracer("agentsim"),
			Propagator: propagation.TraceContext{}},
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.all = append(s.all, a)
	s.mu.Unlock()
	return a, nil
}

func (s *simulation) agents() []*agent.Agent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all
}

func (s *simulation) connected() int {
	c, _ := s.counts()
	return c
}

// counts is how many agents hold a stream, and how many hold all of
// theirs (--streams).
func (s *simulation) counts() (connected, full int) {
	for _, a := range s.agents() {
		n := a.Streams()
		if n > 0 {
			connected++
		}
		if n >= s.streams {
			full++
		}
	}
	return connected, full
}

// collector counts the agents started and those holding a stream, at
// each scrape.
func (s *simulation) collector() prometheus.Collector {
	return &agentsCollector{s: s, desc: prometheus.NewDesc("tether_agentsim_agents", "Simulated agents, by state: started, connected (holding at least one stream), full (holding all their streams).", []string{"state"}, nil)}
}

type agentsCollector struct {
	s    *simulation
	desc *prometheus.Desc
}

func (c *agentsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *agentsCollector) Collect(ch chan<- prometheus.Metric) {
	connected, full := c.s.counts()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(len(c.s.agents())), "started")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(connected), "connected")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(full), "full")
}

// memoryStore keeps a simulated agent's credential in memory: a restart
// of the simulator enrolls again with new bootstrap tokens.
type memoryStore struct {
	mu sync.Mutex
	c  agent.Credential
}

func (m *memoryStore) Load(context.Context) (agent.Credential, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.c, nil
}

func (m *memoryStore) Save(_ context.Context, c agent.Credential) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.c = c
	return nil
}

// discard registers nothing: a simulated agent's metrics go nowhere.
type discard struct{}

func (discard) Register(prometheus.Collector) error  { return nil }
func (discard) MustRegister(...prometheus.Collector) {}
func (discard) Unregister(prometheus.Collector) bool { return true }
