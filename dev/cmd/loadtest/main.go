// Command loadtest is `make loadtest`: it starts the stack on this machine
// (two gateways, routers and subscribers, as the e2e stack), connects a
// fleet of simulated agents (agentsim), measures what the idle fleet
// costs, runs one scenario of the load driver (loadtest/driver) against
// it while sampling every Tether process, and writes
// bench/results/capacity-SCENARIO.md.
//
//	go run ./dev/cmd/loadtest --scenario steady --agents 1000 --rate 200 --duration 60s
//
// Scenarios: idle (the fleet's connection costs only), steady, mixed,
// spike, watches (--watches held open for --duration), storm (steady load
// while the subscriber holding half the fleet is SIGKILLed and restarted),
// soak (mixed load and watches, memory followed).
//
// With --target it loads a Tether deployed elsewhere instead: agentsim
// runs here and connects its agents to the deployed agents' endpoint, the
// driver sends to the deployed gateways, and the processes named by
// --metrics are sampled through their /metrics.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tether-dev/tether/dev/proc"
	"github.com/tether-dev/tether/dev/stack"
	"github.com/tether-dev/tether/lib/subject"
	"github.com/tether-dev/tether/loadtest/driver"
)

// config is what a run does.
type config struct {
	scenario string
	agents   int
	rate     float64
	duration time.Duration
	watches  int
	// watchEvents is the events a second all watches together are sent.
	watchEvents float64
	idle        time.Duration
	stormDown   time.Duration
	startRate   float64
	out         string
	prefix      string
	keep        bool
	profileDir  string
	// deployed names a Tether deployed elsewhere; its target empty: the
	// stack this command starts.
	deployed deployed
}

// watchEvery is how often each watch is sent an event.
func (c config) watchEvery() time.Duration {
	return time.Duration(float64(c.watches) / c.watchEvents * float64(time.Second))
}

// reportName names the report files: the scenario's, and a storm whose
// subscriber stays down apart.
func (c config) reportName() string {
	if c.scenario == "storm" && c.stormDown < 0 {
		return "capacity-storm-stays-down"
	}
	return "capacity-" + c.scenario
}

func main() {
	var c config
	flag.StringVar(&c.scenario, "scenario", "steady", "idle, steady, mixed, spike, watches, storm or soak")
	flag.IntVar(&c.agents, "agents", 1000, "simulated agents (clusters)")
	flag.Float64Var(&c.rate, "rate", 200, "requests per second offered (steady, mixed; spike's base rate)")
	flag.DurationVar(&c.duration, "duration", time.Minute, "how long the scenario's load lasts")
	flag.IntVar(&c.watches, "watches", 1000, "watches held open (watches, soak)")
	flag.Float64Var(&c.watchEvents, "watch-events", 1000, "events per second across all the watches held open (watches, soak): each watch gets one every watches/watch-events seconds")
	flag.DurationVar(&c.idle, "idle", 30*time.Second, "how long the connected fleet idles before it is measured")
	flag.DurationVar(&c.stormDown, "storm-down", 0, "storm: how long the killed subscriber stays down before it is restarted; negative: for good")
	flag.Float64Var(&c.startRate, "start-rate", 500, "agents started per second")
	flag.StringVar(&c.out, "out", "bench/results", "folder for capacity-SCENARIO.md")
	flag.StringVar(&c.profileDir, "profile", "", "folder for CPU, heap and goroutine profiles of the gateway, router and subscriber, taken over the middle third of the load (the stack this command starts)")
	flag.BoolVar(&c.keep, "keep", false, "keep the stack's state folder, with every process's log, and say where")
	flag.StringVar(&c.prefix, "prefix", "sim", "the simulated clusters are PREFIX-00000, PREFIX-00001, ...")
	d := &c.deployed
	flag.StringVar(&d.target, "target", "", "a deployed Tether instead of the stack: its gateways' URLs, comma-separated")
	flag.StringVar(&d.ca, "target-ca", "", "with --target: PEM file of the CA of the gateways' certificates")
	flag.StringVar(&d.tokensFile, "target-tokens", "", "with --target: the load users' tokens, one a line or as tokens.csv rows (token first); give many, the gateway limits each user")
	flag.StringVar(&d.adminToken, "target-admin-token", "", "with --target: file holding a platform administrator's token, which creates the simulated clusters")
	flag.StringVar(&d.agentsURL, "agents-url", "", "with --target: the agents' endpoint (the subscribers), comma-separated")
	flag.StringVar(&d.agentsCA, "agents-ca", "", "with --target: PEM file of the CA of the subscribers' certificates")
	flag.StringVar(&d.identityRoot, "identity-root-key", "", "with --target: PEM file of the identity root's public key, as for the agent")
	flag.StringVar(&d.metrics, "metrics", "", "with --target: NAME=URL of each Tether process's /metrics to sample, comma-separated (kubectl port-forward to reach them)")
	flag.StringVar(&d.agentsim, "agentsim", "", "with --target: the agentsim binary to run (default: built from this checkout)")
	flag.StringVar(&d.tenant, "tenant", "acme", "with --target: the tenant of the simulated clusters, which the load users must be members of")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, "loadtest: "+format+"\n", a...) }

// loadUserCount is how many users send the load (load-00, load-01, ...).
const loadUserCount = 64

// services are the Tether processes sampled.
var services = []string{"gateway", "gateway-1", "router", "router-1", "subscriber", "subscriber-1", "agent-registry", "natsd"}

func run(ctx context.Context, c config) error {
	switch c.scenario {
	case "idle", "steady", "mixed", "spike", "watches", "storm", "soak":
	default:
		return fmt.Errorf("no scenario %q (idle, steady, mixed, spike, watches, storm, soak)", c.scenario)
	}
	if c.agents < 1 {
		return errors.New("--agents must be at least 1")
	}
	if c.watches < 1 || c.watchEvents <= 0 {
		return errors.New("--watches and --watch-events must be positive")
	}
	if !subject.ValidClusterID(c.prefix + "-00000") {
		return fmt.Errorf("--prefix %q makes no valid cluster id", c.prefix)
	}
	if c.deployed.target != "" {
		if err := c.deployed.check(c.scenario); err != nil {
			return err
		}
		return runDeployed(ctx, c)
	}
	w, err := stack.NewWorkspace(ctx, "tether-loadtest-", os.Stderr)
	if err != nil {
		return err
	}
	dir := w.Dir
	if c.keep {
		defer logf("kept the stack's state and logs in %s", filepath.Join(dir, "state"))
	} else {
		defer w.Close()
	}
	quiet := []string{"--log-level", "warn"}
	if c.keep {
		quiet = []string{"--log-level", "info"}
	}
	if c.profileDir != "" {
		quiet = append(quiet, "--pprof")
	}
	// The load comes from many users, as in a fleet: a gateway limits what
	// one user may hold (--max-long-running-per-user, 200).
	users := stack.DefaultUsers()
	var loadUsers []string
	for i := range loadUserCount {
		name := fmt.Sprintf("load-%02d", i)
		loadUsers = append(loadUsers, name)
		users = append(users, stack.User{Name: name, Groups: []string{"acme:developers"}, Tenants: []string{"acme"}})
	}
	s, err := stack.Up(ctx, stack.Options{
		Root: w.Root, BinDir: w.BinDir, StateDir: filepath.Join(dir, "state"), KubeBinDir: w.KubeBin, Log: os.Stderr, Replicas: 2, Users: users,
		Args: map[string][]string{"gateway": quiet, "router": quiet, "subscriber": quiet, "agent": quiet, "agent-registry": quiet},
	})
	if err != nil {
		return err
	}
	defer func() { _ = s.Down() }()
	admin := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(admin, []byte(s.Users["admin"].Token), 0o600); err != nil {
		return err
	}
	js, err := registryJetStream(s, filepath.Join(dir, "state"))
	if err != nil {
		return err
	}
	sys := &system{
		about: fmt.Sprintf("2 gateways, 2 routers, 2 subscribers, agent-registry and one NATS node, as `make run REPLICAS=2`, TLS on every hop; %d simulated agents (agentsim: the real agent against an in-memory cluster), two streams each, in %d agentsim process(es) on the same cores",
			c.agents, (c.agents+perProcess-1)/perProcess),
		procs: localProcs(s),
		fleet: fleetArgs{gatewayURL: s.GatewayURL, gatewayCA: s.CAFile, adminTokenFile: admin, subscriberURLs: s.SubscriberURLs,
			subscriberCA: s.CAFile, identityRoot: s.Identity.RootPublic, tenant: "acme", agentsim: s.Bin("agentsim"), logDir: logDir(dir)},
		gateways: s.GatewayURLs, ca: s.CAFile, clusters: s.Clusters(), js: js, local: s,
	}
	for _, u := range loadUsers {
		sys.tokens = append(sys.tokens, s.Users[u].Token)
	}
	return measure(ctx, c, sys, commit(w.Root))
}

// runDeployed loads the Tether c.deployed names, with agentsim on this
// machine.
func runDeployed(ctx context.Context, c config) error {
	root, err := stack.RepoRoot(".")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tether-loadtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sys, err := deployedSystem(ctx, root, dir, dir, c.deployed)
	if err != nil {
		return err
	}
	return measure(ctx, c, sys, commit(root))
}

// measure connects the fleet to sys, measures it idle, runs the scenario
// and writes the report.
func measure(ctx context.Context, c config, sys *system, commit string) error {
	r := &report{cfg: c, started: time.Now(), commit: commit, about: sys.about, procs: sys.procs}
	r.before = sample(sys.procs, nil)
	logf("starting %d simulated agents", c.agents)
	start := time.Now()
	sims, err := startFleet(ctx, c, sys.fleet)
	if err != nil {
		return err
	}
	defer sims.stop()
	r.connectTime = time.Since(start)
	r.connected, r.incomplete = int(sims.metric(`tether_agentsim_agents{state="connected"}`)), sims.incomplete
	logf("%d of %d agents connected in %v; idling %v", r.connected, c.agents, r.connectTime.Round(time.Millisecond), c.idle)
	if sys.local != nil {
		// Pids as they are now: a process restarted by the stack meanwhile
		// has a new one.
		sys.procs = localProcs(sys.local)
		r.procs = sys.procs
	}
	first, err := lastSeqs(ctx, sys.js)
	if err != nil {
		return err
	}
	idleStart := sample(sys.procs, sims)
	if !sleep(ctx, c.idle) {
		return ctx.Err()
	}
	idleEnd := sample(sys.procs, sims)
	last, err := lastSeqs(ctx, sys.js)
	if err != nil {
		return err
	}
	r.idle = idleEnd
	r.idleCPU = cpuDelta(idleStart, idleEnd)
	if first != nil {
		r.idleWrites = map[string]float64{}
		for _, name := range writtenStreams {
			r.idleWrites[name] = float64(last[name]-first[name]) / c.idle.Seconds()
		}
	}

	if c.scenario != "idle" {
		clusters := make([]string, c.agents)
		for i := range clusters {
			clusters[i] = fmt.Sprintf("%s-%05d", c.prefix, i)
		}
		target := driver.Target{Gateways: sys.gateways, CAFile: sys.ca, Clusters: clusters, Namespace: "load", Tokens: sys.tokens}
		sampler := startSampler(sys.procs, sims)
		loadStart := sample(sys.procs, sims)
		profiled := make(chan struct{})
		if c.profileDir != "" && sys.local != nil {
			go func() {
				defer close(profiled)
				profileMiddle(ctx, c, sys.local)
			}()
		} else {
			close(profiled)
		}
		switch c.scenario {
		case "steady":
			// The same load on one cluster first: per-request work must
			// not grow with the number of clusters.
			one := target
			one.Clusters = clusters[:1]
			if r.oneCluster, err = driver.Run(ctx, one, driver.Steady(c.rate, c.duration)); err == nil {
				r.load, err = driver.Run(ctx, target, driver.Steady(c.rate, c.duration))
			}
		case "mixed":
			r.load, err = driver.Run(ctx, target, driver.Mixed(c.rate, c.duration))
		case "spike":
			r.load, err = driver.Run(ctx, target, driver.Spike(c.rate, c.duration))
		case "watches":
			// All through one gateway: what one gateway carries.
			one := target
			one.Gateways = target.Gateways[:1]
			r.watches, err = driver.RunWatches(ctx, one, c.watches, c.duration)
		case "storm":
			r.load, r.storm, err = storm(ctx, c, sys, target, sims)
		case "soak":
			// Mixed load with watches held open the whole time.
			watched := make(chan error, 1)
			go func() {
				var werr error
				r.watches, werr = driver.RunWatches(ctx, target, c.watches, c.duration)
				watched <- werr
			}()
			r.load, err = driver.Run(ctx, target, driver.Mixed(c.rate, c.duration))
			err = errors.Join(err, <-watched)
		}
		loadEnd := sample(sys.procs, sims)
		r.timeline = sampler.stop()
		<-profiled
		if err != nil {
			return err
		}
		r.loadCPU = cpuDelta(loadStart, loadEnd)
		for name, p := range loadEnd.procs {
			r.retries += p.retries - loadStart.procs[name].retries
		}
		r.loadEnd = loadEnd
	}
	path := filepath.Join(c.out, c.reportName()+".md")
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	if r.load != nil {
		png := c.reportName() + ".png"
		if err := plotLoad(filepath.Join(c.out, png), c.scenario, r.load.Timeline); err != nil {
			return err
		}
		r.plot = png
	}
	if c.scenario == "soak" {
		png := c.reportName() + "-memory.png"
		if err := plotProcesses(filepath.Join(c.out, png), r.tetherProcs(), r.timeline); err != nil {
			return err
		}
		r.memoryPlot = png
	}
	if err := os.WriteFile(path, []byte(r.markdown()), 0o644); err != nil {
		return err
	}
	logf("wrote %s", path)
	return nil
}

// writtenStreams are the JetStream streams the fleet's presence writes
// to: agent events, the subscribers' leases, the agents' projection and
// the clusters' events.
var writtenStreams = []string{"AGENTS", "SUBSCRIBERS", "KV_AGENTS_STATE", "CLUSTERS"}

// registryJetStream reads the streams as agent-registry, whose user may.
func registryJetStream(s *stack.Stack, stateDir string) (jetstream.JetStream, error) {
	pw, err := os.ReadFile(filepath.Join(stateDir, "nats-users", "agent-registry"))
	if err != nil {
		return nil, fmt.Errorf("reading agent-registry's NATS password: %w", err)
	}
	nc, err := nats.Connect(s.NATSURL, nats.UserInfo("agent-registry", string(pw)), nats.RootCAs(s.CAFile), nats.CustomInboxPrefix("_INBOX_agent-registry"))
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS: %w", err)
	}
	return jetstream.New(nc)
}

// lastSeqs is each written stream's last sequence: what was ever written;
// nil without a JetStream to read (a deployed Tether).
func lastSeqs(ctx context.Context, js jetstream.JetStream) (map[string]uint64, error) {
	if js == nil {
		return nil, nil
	}
	out := map[string]uint64{}
	for _, name := range writtenStreams {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("reading the %s stream: %w", name, err)
		}
		out[name] = st.CachedInfo().State.LastSeq
	}
	return out, nil
}

// errNotReady: the process runs, and was not ready in time.
var errNotReady = errors.New("not ready in time")

func waitReady(ctx context.Context, p *proc.Process, url string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		if p.Exited() {
			return fmt.Errorf("agentsim exited: %v", p.ExitError())
		}
		if code, _ := get(ctx, url); code == 200 {
			return nil
		}
		if time.Now().After(deadline) {
			_, body := get(ctx, url)
			logf("%s: not ready within %v: %s", p.Name, within.Round(time.Second), strings.TrimSpace(body))
			return errNotReady
		}
		if !sleep(ctx, time.Second) {
			return ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
