package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-dev/tether/dev/procstat"
	"github.com/tether-dev/tether/dev/stack"
	"github.com/tether-dev/tether/loadtest/driver"
)

// point is one process at one moment.
type point struct {
	cpu        time.Duration
	rssKB      int64
	fds        int
	goroutines float64
	streams    float64 // a subscriber's agent streams
	// heap and stacks the Go runtime holds (its own metrics), in bytes:
	// what of the RSS is live objects and goroutine stacks.
	heapInuse, stackInuse float64
	// retries: requests a router sent again (no agent answered, or a hop
	// was lost before the answer), ever.
	retries float64
}

// snapshot is every sampled process at one moment.
type snapshot struct {
	at    time.Time
	procs map[string]point
}

// process is one Tether process the run samples: by its pid when it runs
// on this machine, and by its own metrics (a deployed one by those alone).
type process struct {
	name    string
	pid     int    // 0: not on this machine
	metrics string // its /metrics URL; "" when it serves none (natsd)
}

// localProcs are the sampled processes of the stack this command started.
func localProcs(s *stack.Stack) []process {
	var out []process
	for _, name := range services {
		p := s.Process(name)
		if p == nil {
			continue
		}
		pr := process{name: name, pid: p.Pid()}
		if name != "natsd" {
			pr.metrics = "http://" + s.Admin[name] + "/metrics"
		}
		out = append(out, pr)
	}
	return out
}

// sample reads each process's CPU, memory and files, from /proc for one
// on this machine and from its process metrics otherwise, and its
// goroutines, streams, heap and stacks from its own metrics; "agentsim" is
// the fleet's processes together.
func sample(procs []process, sims *fleet) snapshot {
	snap := snapshot{at: time.Now(), procs: map[string]point{}}
	for _, pr := range procs {
		p := point{goroutines: -1}
		if pr.metrics != "" {
			m, err := scrape(pr.metrics)
			if err != nil && pr.pid == 0 {
				continue // nothing to say of it this time
			}
			p.goroutines = m["go_goroutines"]
			p.streams = m["tether_agent_streams"]
			p.heapInuse, p.stackInuse = m["go_memstats_heap_inuse_bytes"], m["go_memstats_stack_inuse_bytes"]
			p.retries = m["tether_router_retries_total"]
			p.cpu = time.Duration(m["process_cpu_seconds_total"] * float64(time.Second))
			p.rssKB, p.fds = int64(m["process_resident_memory_bytes"]/1024), int(m["process_open_fds"])
		}
		if pr.pid > 0 {
			// /proc is finer than the metrics' CPU seconds, and natsd has
			// only /proc.
			p.cpu, _, _, _ = procstat.Stat(pr.pid)
			p.rssKB, p.fds = procstat.RSSKB(pr.pid), procstat.FDs(pr.pid)
		}
		snap.procs[pr.name] = p
	}
	if sims != nil {
		var all point
		for _, p := range sims.procs {
			cpu, _, _, _ := procstat.Stat(p.Pid())
			all.cpu += cpu
			all.rssKB += procstat.RSSKB(p.Pid())
			all.fds += procstat.FDs(p.Pid())
		}
		all.goroutines = sims.metric("go_goroutines")
		snap.procs["agentsim"] = all
	}
	// This process: the load driver, on the same cores.
	self := os.Getpid()
	cpu, _, _, _ := procstat.Stat(self)
	snap.procs["driver"] = point{cpu: cpu, rssKB: procstat.RSSKB(self), fds: procstat.FDs(self), goroutines: float64(runtime.NumGoroutine())}
	return snap
}

// scrape reads a Prometheus text exposition into series → value (a series
// with labels under its whole name, labels included).
func scrape(url string) (map[string]float64, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

func cpuDelta(a, b snapshot) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, p := range b.procs {
		out[name] = p.cpu - a.procs[name].cpu
	}
	return out
}

// sampler takes a snapshot every second while the load runs.
type sampler struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	snaps []snapshot
}

func startSampler(procs []process, sims *fleet) *sampler {
	sm := &sampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sm.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-sm.stopc:
				return
			case <-t.C:
			}
			snap := sample(procs, sims)
			sm.mu.Lock()
			sm.snaps = append(sm.snaps, snap)
			sm.mu.Unlock()
		}
	}()
	return sm
}

func (sm *sampler) stop() []snapshot {
	close(sm.stopc)
	<-sm.done
	return sm.snaps
}

// report is what a run found.
type report struct {
	cfg     config
	started time.Time
	commit  string
	// about describes the Tether loaded.
	about string

	procs        []process
	before, idle snapshot
	idleCPU      map[string]time.Duration
	connectTime  time.Duration
	connected    int
	incomplete   bool
	// idleWrites is each JetStream stream's writes/s over the idle window.
	idleWrites map[string]float64

	load    *driver.Result
	watches *driver.WatchResult
	loadCPU map[string]time.Duration
	// retries are the requests the routers sent again during the load.
	retries  float64
	loadEnd  snapshot
	timeline []snapshot
	// plot is the PNG of the load's seconds, beside the report.
	plot  string
	storm *stormResult
	// oneCluster is steady's same load, all on one cluster, run first.
	oneCluster *driver.Result
	// memoryPlot is soak's RSS and goroutines over time.
	memoryPlot string
}

// tetherProcs are the processes whose cost is Tether's (not the
// simulator's, not the control plane's): the sampled ones.
func (r *report) tetherProcs() []string {
	out := make([]string, len(r.procs))
	for i, p := range r.procs {
		out[i] = p.name
	}
	return out
}

func (r *report) markdown() string {
	var b strings.Builder
	c := r.cfg
	fmt.Fprintf(&b, "# Capacity: %s\n\n", c.scenario)
	fmt.Fprintf(&b, "- Date: %s\n- Tether: commit %s\n- Machine: %d CPUs (nproc), %s/%s, %s\n", r.started.UTC().Format("2006-01-02 15:04 UTC"), r.commit, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	storm := ""
	if c.scenario == "storm" {
		storm = fmt.Sprintf(" STORM_DOWN=%v", c.stormDown)
	}
	if c.deployed.target != "" {
		storm += " TARGET=" + c.deployed.target + " TARGET_CA=… TARGET_TOKENS=… TARGET_ADMIN_TOKEN=… AGENTS_URL=" + c.deployed.agentsURL + " AGENTS_CA=… IDENTITY_ROOT=…"
	}
	fmt.Fprintf(&b, "- Command: `make loadtest SCENARIO=%s AGENTS=%d RATE=%g DURATION=%v%s` (`go run ./dev/cmd/loadtest`)\n", c.scenario, c.agents, c.rate, c.duration, storm)
	fmt.Fprintf(&b, "- Tether loaded: %s\n\n", r.about)

	b.WriteString("## The connected fleet, idle\n\n")
	if r.incomplete {
		fmt.Fprintf(&b, "**Not every agent connected: %d of %d held a stream %v after agentsim started** (at %g agents/s, the deadline: the time to start them plus 3 minutes). The fleet was measured as it stood, %v idle:\n\n", r.connected, c.agents, r.connectTime.Round(time.Millisecond), c.startRate, c.idle)
	} else {
		fmt.Fprintf(&b, "%d agents enrolled (each with its own bootstrap token, from `EnsureClusters`) and held their streams %v after agentsim started (at %g agents/s). Then %v idle:\n\n", c.agents, r.connectTime.Round(time.Millisecond), c.startRate, c.idle)
	}
	b.WriteString("| Process | streams held | RSS (MiB) | RSS per stream (KiB) | of it heap in use, stacks (KiB) | goroutines | goroutines per stream | open files | CPU while idle (% of a core) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, name := range append(r.tetherProcs(), "agentsim", "driver") {
		p, ok := r.idle.procs[name]
		if !ok {
			continue
		}
		base := r.before.procs[name]
		perStream, gPerStream, split := "", "", ""
		if p.streams > 0 {
			perStream = fmt.Sprintf("%.1f", float64(p.rssKB-base.rssKB)/p.streams)
			gPerStream = fmt.Sprintf("%.2f", (p.goroutines-base.goroutines)/p.streams)
			split = fmt.Sprintf("%.1f, %.1f", (p.heapInuse-base.heapInuse)/1024/p.streams, (p.stackInuse-base.stackInuse)/1024/p.streams)
		}
		streams := ""
		if p.streams > 0 {
			streams = fmt.Sprintf("%.0f", p.streams)
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f | %s | %s | %s | %s | %d | %.1f |\n", name, streams, float64(p.rssKB)/1024, perStream, split, count(p.goroutines), gPerStream, p.fds,
			100*r.idleCPU[name].Seconds()/c.idle.Seconds())
	}
	b.WriteString("\nPer stream: (now − before agentsim started) ÷ the streams that subscriber holds (`tether_agent_streams`). Heap in use and stacks are the Go runtime's own figures (`go_memstats_heap_inuse_bytes`, `go_memstats_stack_inuse_bytes`); the rest of the RSS is the collector's headroom, freed spans not yet returned and the runtime itself.\n\n")
	if r.idleWrites != nil {
		var total float64
		var per []string
		for _, name := range writtenStreams {
			total += r.idleWrites[name]
			per = append(per, fmt.Sprintf("`%s` %.2f", name, r.idleWrites[name]))
		}
		fmt.Fprintf(&b, "JetStream writes from the idle fleet: %.2f/s (%s; each stream's last sequence over the idle window; ADR 014).\n\n", total, strings.Join(per, ", "))
	} else {
		b.WriteString("JetStream writes from the idle fleet: not measured (no NATS credentials for a deployed Tether).\n\n")
	}

	if r.storm != nil {
		r.stormSection(&b)
	}
	if r.oneCluster != nil {
		r.compareSection(&b)
	}
	if r.load != nil {
		r.loadSection(&b)
	}
	if r.watches != nil {
		r.watchSection(&b)
	}
	if r.cfg.scenario == "soak" {
		r.soakSection(&b)
	}
	if r.load != nil && r.load.Sent() > 0 {
		r.sizingSection(&b)
	}
	return b.String()
}

func us(v int64) string { return fmt.Sprintf("%.2f", float64(v)/1000) }

func (r *report) loadSection(b *strings.Builder) {
	l := r.load
	sc := l.Scenario
	fmt.Fprintf(b, "## Load: %s\n\n", sc.Name)
	fmt.Fprintf(b, "Open loop (vegeta's pacer: requests leave on schedule whatever the earlier ones did), %g requests/s", sc.Rate)
	if sc.SpikeFactor > 1 {
		fmt.Fprintf(b, ", ×%g from %v for %v", sc.SpikeFactor, sc.SpikeAt, sc.SpikeFor)
	}
	fmt.Fprintf(b, " for %v, spread at random over all %d clusters and %d users (tenant acme); latency in HDR histograms.\n\n", sc.Duration, r.cfg.agents, loadUserCount)
	fmt.Fprintf(b, "Sent %d in %v (%.1f/s), failed %d. Codes: %s.", l.Sent(), l.Elapsed.Round(time.Millisecond), float64(l.Sent())/l.Elapsed.Seconds(), l.Failed(), codes(l.Codes))
	if len(l.Errors) > 0 {
		fmt.Fprintf(b, " Errors: %v.", l.Errors)
	}
	b.WriteString("\n\n| Requests (ms) | count | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|\n")
	row := func(name string, h interface {
		TotalCount() int64
		ValueAtQuantile(float64) int64
		Max() int64
	}) {
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s |\n", name, h.TotalCount(), us(h.ValueAtQuantile(50)), us(h.ValueAtQuantile(90)),
			us(h.ValueAtQuantile(99)), us(h.ValueAtQuantile(99.9)), us(h.Max()))
	}
	row("all", l.All)
	var kinds []string
	for k := range l.Latency {
		kinds = append(kinds, string(k))
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		row(k, l.Latency[driver.Kind(k)])
	}
	r.costSection(b, r.requestsDuringLoad())
	if r.plot != "" {
		fmt.Fprintf(b, "\n![requests and latency, second by second](%s)\n", r.plot)
	}
	b.WriteString("\nSecond by second:\n\n| s | offered/s | sent | ok | failed | p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, s := range l.Timeline {
		fmt.Fprintf(b, "| %d | %.0f | %d | %d | %d | %.2f | %.2f |\n", i, s.Offered, s.Sent, s.OK, s.Fail, float64(s.P50)/1e6, float64(s.P99)/1e6)
	}
}

// compareSection sets the load over every cluster beside the same load on
// one cluster.
func (r *report) compareSection(b *strings.Builder) {
	one, all := r.oneCluster, r.load
	fmt.Fprintf(b, "## %d clusters against one\n\nThe same steady load (%g requests/s for %v, the same users), first all on one cluster, then spread at random over all %d.\n\n",
		r.cfg.agents, one.Scenario.Rate, one.Scenario.Duration, r.cfg.agents)
	b.WriteString("| Requests (ms) | sent | failed | p50 | p90 | p99 | p99.9 |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range []struct {
		name string
		res  *driver.Result
	}{{"one cluster", one}, {fmt.Sprintf("%d clusters", r.cfg.agents), all}} {
		h := x.res.All
		fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %s | %s |\n", x.name, x.res.Sent(), x.res.Failed(), us(h.ValueAtQuantile(50)), us(h.ValueAtQuantile(90)), us(h.ValueAtQuantile(99)), us(h.ValueAtQuantile(99.9)))
	}
	ratio := func(q float64) float64 {
		return float64(all.All.ValueAtQuantile(q)) / float64(max(one.All.ValueAtQuantile(q), 1))
	}
	fmt.Fprintf(b, "\nOver all clusters against one: p50 ×%.2f, p99 ×%.2f.\n\n", ratio(50), ratio(99))
	fmt.Fprintf(b, "Of the spread run, the first request to each cluster (%d of them) and the rest (%d), in ms: p50 %s and %s, p99 %s and %s.\n\n",
		all.First.TotalCount(), all.Later.TotalCount(), us(all.First.ValueAtQuantile(50)), us(all.Later.ValueAtQuantile(50)),
		us(all.First.ValueAtQuantile(99)), us(all.Later.ValueAtQuantile(99)))
}

// requestsDuringLoad is every request sent while the load's CPU was
// measured: steady's one-cluster run too.
func (r *report) requestsDuringLoad() float64 {
	n := float64(r.load.Sent())
	if r.oneCluster != nil {
		n += float64(r.oneCluster.Sent())
	}
	return n
}

// costSection gives the CPU and memory the load cost Tether's processes.
func (r *report) costSection(b *strings.Builder, requests float64) {
	var cpu time.Duration
	b.WriteString("\n| Process | CPU during the load (s) | RSS at the end (MiB) | goroutines at the end |\n|---|---:|---:|---:|\n")
	for _, name := range append(r.tetherProcs(), "agentsim", "driver") {
		p, ok := r.loadEnd.procs[name]
		if !ok {
			continue
		}
		if name != "agentsim" && name != "driver" {
			cpu += r.loadCPU[name]
		}
		fmt.Fprintf(b, "| %s | %.2f | %.1f | %s |\n", name, r.loadCPU[name].Seconds(), float64(p.rssKB)/1024, count(p.goroutines))
	}
	if requests > 0 {
		fmt.Fprintf(b, "\nTether's processes (all but agentsim and the driver, this command itself): %.2f CPU-seconds per 1,000 requests.\n", cpu.Seconds()/requests*1000)
	}
	fmt.Fprintf(b, "\nRequests the routers sent again during the load (`tether_router_retries_total`: no agent answered in time, or a hop was lost before the answer): %.0f.\n", r.retries)
}

func (r *report) watchSection(b *strings.Builder) {
	w := r.watches
	through := "the gateways"
	if r.cfg.scenario == "watches" {
		through = "one gateway"
	}
	fmt.Fprintf(b, "## Watches\n\n%d watches through %s (spread over the clusters), held %v, each sent an event every %v by its simulated cluster (agentsim --watch-every): %g events/s in all.\n\n",
		w.Watches, through, r.cfg.duration, r.cfg.watchEvery(), r.cfg.watchEvents)
	fmt.Fprintf(b, "Opened %d, broken before their end %d, events read %d. Errors: %v.\n\n", w.Opened, w.Broken, w.Events, w.Errors)
	fmt.Fprintf(b, "Event lag, from the simulated cluster's send to the client's read (ms): p50 %s, p99 %s, p99.9 %s, max %s.\n", us(w.Lag.ValueAtQuantile(50)),
		us(w.Lag.ValueAtQuantile(99)), us(w.Lag.ValueAtQuantile(99.9)), us(w.Lag.Max()))
	if w.Opening > 0 {
		fmt.Fprintf(b, "\nOnce every watch had opened (%v after the first was sent), over the %d events sent from then on: p50 %s, p99 %s, p99.9 %s, max %s.\n",
			w.Opening.Round(100*time.Millisecond), w.Settled.TotalCount(), us(w.Settled.ValueAtQuantile(50)), us(w.Settled.ValueAtQuantile(99)),
			us(w.Settled.ValueAtQuantile(99.9)), us(w.Settled.Max()))
	}
	b.WriteString("\n| Process | RSS with the watches open, minus idle (KiB per watch) |\n|---|---:|\n")
	peak := map[string]int64{}
	for _, s := range r.timeline {
		for name, p := range s.procs {
			peak[name] = max(peak[name], p.rssKB)
		}
	}
	for _, name := range r.tetherProcs() {
		if _, ok := peak[name]; ok && w.Opened > 0 {
			fmt.Fprintf(b, "| %s | %.1f |\n", name, float64(peak[name]-r.idle.procs[name].rssKB)/float64(w.Opened))
		}
	}
	r.costSection(b, 0)
}

// count is a count, or — where there is none.
func count(v float64) string {
	if v < 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", v)
}

func codes(m map[int]int) string {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%d×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func get(ctx context.Context, url string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body)
}

func commit(root string) string {
	c, dirty := stack.Commit(root, "services", "lib", "dev", "loadtest")
	if dirty {
		c += " with uncommitted changes"
	}
	return c
}

// trend is the least-squares slope of ys over xs (seconds), per 10
// minutes.
func trend(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d * 600
}

// soakSection says whether any process's RSS or goroutines grew over the
// soak: the slope over its last two thirds (the first third warms up).
func (r *report) soakSection(b *strings.Builder) {
	tl := r.timeline
	fmt.Fprintf(b, "## Soak\n\n%v of the mixed load above with %d watches held open, every process sampled each second (%d samples). A process trends upward when, over the last two thirds of the run, its RSS grows by more than 2%% of its mean, or its goroutines by more than 1%% + 2, per 10 minutes.\n\n", r.cfg.duration, r.cfg.watches, len(tl))
	if r.memoryPlot != "" {
		fmt.Fprintf(b, "![RSS and goroutines of every process, second by second](%s)\n\n", r.memoryPlot)
	}
	if len(tl) < 3 {
		b.WriteString("Too few samples to judge.\n")
		return
	}
	from := len(tl) / 3
	b.WriteString("| Process | RSS at a third (MiB) | RSS at the end (MiB) | RSS trend (MiB per 10 min) | goroutines at a third | at the end | goroutine trend (per 10 min) | |\n|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, name := range r.tetherProcs() {
		var xs, rss, gs []float64
		for _, s := range tl[from:] {
			p, ok := s.procs[name]
			if !ok {
				continue
			}
			xs = append(xs, s.at.Sub(tl[0].at).Seconds())
			rss, gs = append(rss, float64(p.rssKB)/1024), append(gs, p.goroutines)
		}
		if len(xs) < 2 {
			continue
		}
		var mean float64
		for _, v := range rss {
			mean += v / float64(len(rss))
		}
		rt, gt := trend(xs, rss), trend(xs, gs)
		verdict := "flat"
		if rt > 0.02*mean || (gs[0] >= 0 && gt > 0.01*gs[0]+2) {
			verdict = "**grows**"
		}
		fmt.Fprintf(b, "| %s | %.1f | %.1f | %+.2f | %s | %s | %+.1f | %s |\n", name, rss[0], rss[len(rss)-1], rt, count(gs[0]), count(gs[len(gs)-1]), gt, verdict)
	}
	b.WriteString("\n")
}

// sizingSection turns this run's costs into cores and memory for fleets
// of other sizes: per connected cluster from the idle fleet, per request
// from the load, per watch from the watches (when the run held some).
func (r *report) sizingSection(b *strings.Builder) {
	var memPerCluster, cpuPerCluster, baseMem, loadCPU, watchMem float64
	for _, name := range r.tetherProcs() {
		before, idle := r.before.procs[name], r.idle.procs[name]
		baseMem += float64(before.rssKB) / 1024
		memPerCluster += float64(idle.rssKB-before.rssKB) / 1024 / float64(r.cfg.agents)
		cpuPerCluster += r.idleCPU[name].Seconds() / r.cfg.idle.Seconds() / float64(r.cfg.agents)
		loadCPU += r.loadCPU[name].Seconds()
	}
	cpuPerReq := loadCPU / r.requestsDuringLoad()
	if w := r.watches; w != nil && w.Opened > 0 {
		for _, name := range r.tetherProcs() {
			var peak int64
			for _, s := range r.timeline {
				peak = max(peak, s.procs[name].rssKB)
			}
			watchMem += float64(peak-r.idle.procs[name].rssKB) / 1024 / float64(w.Opened)
		}
	}
	b.WriteString("## Sizing\n\nFrom this run, across all of Tether's processes (gateways, routers, subscribers, agent-registry, NATS):\n\n")
	fmt.Fprintf(b, "- memory per connected cluster (two agent streams): %.1f KiB; CPU per idle cluster: %.4f%% of a core;\n", memPerCluster*1024, cpuPerCluster*100)
	fmt.Fprintf(b, "- CPU per 1,000 requests of this load: %.2f CPU-seconds", cpuPerReq*1000)
	if r.watches != nil && r.watches.Events > 0 {
		fmt.Fprintf(b, " (the watches' %d events rode along and are charged to the requests: an upper bound)", r.watches.Events)
	}
	b.WriteString(";\n")
	if watchMem > 0 {
		fmt.Fprintf(b, "- memory per open watch: %.1f KiB (the peak during the load, less the idle fleet, per watch: an upper bound);\n", watchMem*1024)
	}
	fmt.Fprintf(b, "- the processes themselves, before any agent: %.0f MiB.\n\n", baseMem)
	b.WriteString("For a fleet of N clusters sending N/10 requests/s of this mix (one request per cluster every 10 s) with N/10 watches open; cores are busy cores (leave headroom), memory is RSS, neither counts the kube-apiservers behind the agents:\n\n| clusters | requests/s | watches | cores | memory (GiB) |\n|---:|---:|---:|---:|---:|\n")
	for _, n := range []float64{1000, 10000, 50000} {
		rate, watches := n/10, n/10
		cores := n*cpuPerCluster + rate*cpuPerReq
		mem := baseMem + n*memPerCluster + watches*watchMem
		fmt.Fprintf(b, "| %.0f | %.0f | %.0f | %.1f | %.1f |\n", n, rate, watches, cores, mem/1024)
	}
	if watchMem == 0 {
		b.WriteString("\nThis run held no watches: their memory is not in the table (`SCENARIO=watches` or `soak` measure it).\n")
	}
	b.WriteString("\n")
}
