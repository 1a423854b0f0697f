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
// while the subscriber holding half the fleet is SIGKILLed and restarted).
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
	"github.com/tether-dev/tether/loadtest/driver"
)

// config is what a run does.
type config struct {
	scenario  string
	agents    int
	rate      float64
	duration  time.Duration
	watches   int
	idle      time.Duration
	stormDown time.Duration
	startRate float64
	out       string
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
	flag.DurationVar(&c.idle, "idle", 30*time.Second, "how long the connected fleet idles before it is measured")
	flag.DurationVar(&c.stormDown, "storm-down", 0, "storm: how long the killed subscriber stays down before it is restarted; negative: for good")
	flag.Float64Var(&c.startRate, "start-rate", 500, "agents started per second")
	flag.StringVar(&c.out, "out", "bench/results", "folder for capacity-SCENARIO.md")
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
	w, err := stack.NewWorkspace(ctx, "tether-loadtest-", os.Stderr)
	if err != nil {
		return err
	}
	defer w.Close()
	dir := w.Dir
	quiet := []string{"--log-level", "warn"}
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
	r := &report{cfg: c, started: time.Now(), commit: commit(w.Root)}

	admin := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(admin, []byte(s.Users["admin"].Token), 0o600); err != nil {
		return err
	}
	js, err := registryJetStream(s, filepath.Join(dir, "state"))
	if err != nil {
		return err
	}
	r.before = sample(s, nil, nil)
	logf("starting %d simulated agents", c.agents)
	start := time.Now()
	sims, err := startFleet(ctx, c, s, logDir(dir), admin)
	if err != nil {
		return err
	}
	defer sims.stop()
	r.connectTime = time.Since(start)
	r.connected, r.incomplete = int(sims.metric(`tether_agentsim_agents{state="connected"}`)), sims.incomplete
	logf("%d of %d agents connected in %v; idling %v", r.connected, c.agents, r.connectTime.Round(time.Millisecond), c.idle)
	r.pids = pidsOfStack(s)
	first, err := lastSeqs(ctx, js)
	if err != nil {
		return err
	}
	idleStart := sample(s, r.pids, sims)
	if !sleep(ctx, c.idle) {
		return ctx.Err()
	}
	idleEnd := sample(s, r.pids, sims)
	last, err := lastSeqs(ctx, js)
	if err != nil {
		return err
	}
	r.idle = idleEnd
	r.idleCPU = cpuDelta(idleStart, idleEnd)
	r.idleWrites = map[string]float64{}
	for _, name := range writtenStreams {
		r.idleWrites[name] = float64(last[name]-first[name]) / c.idle.Seconds()
	}

	if c.scenario != "idle" {
		clusters := make([]string, c.agents)
		for i := range clusters {
			clusters[i] = fmt.Sprintf("sim-%05d", i)
		}
		target := driver.Target{Gateways: s.GatewayURLs, CAFile: s.CAFile, Clusters: clusters, Namespace: "load"}
		for _, u := range loadUsers {
			target.Tokens = append(target.Tokens, s.Users[u].Token)
		}
		sampler := startSampler(s, r.pids, sims)
		loadStart := sample(s, r.pids, sims)
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
			r.watches, err = driver.RunWatches(ctx, target, c.watches, c.duration)
		case "storm":
			r.load, r.storm, err = storm(ctx, c, s, target, sims)
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
		loadEnd := sample(s, r.pids, sims)
		r.timeline = sampler.stop()
		if err != nil {
			return err
		}
		r.loadCPU = cpuDelta(loadStart, loadEnd)
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
		if err := plotProcesses(filepath.Join(c.out, png), r.timeline); err != nil {
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

func joinURLs(urls []string) string {
	out := ""
	for i, u := range urls {
		if i > 0 {
			out += ","
		}
		out += u
	}
	return out
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

// lastSeqs is each written stream's last sequence: what was ever written.
func lastSeqs(ctx context.Context, js jetstream.JetStream) (map[string]uint64, error) {
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
