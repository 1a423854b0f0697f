package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tether-dev/tether/dev/stack"
)

// results is everything the reports show.
type results struct {
	cfg     config
	started time.Time
	k8s     string
	commit  string            // of the Tether tree measured
	proto   map[string]string // HTTP version each target answered with

	seq     map[string]*samples   // sequential small GETs by target
	con     map[string]throughput // 64 concurrent, by target
	seqHops map[string]hist       // per-hop time to head, sequential tether rounds
	conHops map[string]hist       // the same during the concurrent tether phase
	cpu     map[string]map[string]time.Duration

	lists    map[string][]listing
	listCPU  map[string]map[string]time.Duration // CPU during the big lists, by target
	rssBase  map[string]int64
	rssPeak  map[string]int64
	rssAfter map[string]int64
	logs     string
	other    []otherLoad // CPU of processes not ours, by phase
	gzipC    float64     // ms per MB to gzip the big list's kind of data
	// identSign and identVerify time the signed identity's two ends: the
	// gateway's signature and MAC, the agent's check of the MAC (ADR 011);
	// identVerifySig the check of the signature alone (a cluster's first
	// request through a gateway).
	identSign, identVerify, identVerifySig samples
	gzipD                                  float64
	tetherErrs                             []string
	profiles                               map[string]string // go tool pprof -top, by service
}

// otherLoad is the share of the machine's CPU that processes other than the
// stack and the bench used during a phase.
type otherLoad struct {
	phase string
	share float64
}

var services = []string{"gateway", "router", "subscriber", "agent", "natsd"}

// smallGets measures each of targets (direct, tether, then others); the
// hops' histograms are Tether's, through its first gateway.
func smallGets(ctx context.Context, c config, s *stack.Stack, targets []*target, r *results) error {
	tether := targets[1]
	r.proto = map[string]string{}
	r.seq = map[string]*samples{}
	for _, t := range targets {
		r.seq[t.name] = &samples{}
	}
	r.con = map[string]throughput{}
	r.seqHops, r.conHops = map[string]hist{}, map[string]hist{}
	r.cpu = map[string]map[string]time.Duration{}
	for _, t := range targets {
		_, proto, err := t.get(ctx, smallPath, nil)
		if err != nil {
			return fmt.Errorf("first GET: %w", err)
		}
		r.proto[t.name] = proto
		logf("small GET: warm-up %d via %s (%s)", c.warm, t.name, proto)
		if w := sequential(ctx, t, smallPath, c.warm); w.errors > 0 {
			logf("warm-up via %s: %d errors, first: %s", t.name, w.errors, w.firstErr)
		}
	}
	per := c.seqN / c.rounds
	seqCPU := startCPU()
	for round := range c.rounds {
		for _, t := range targets {
			logf("small GET: sequential round %d/%d via %s (%d requests)", round+1, c.rounds, t.name, per)
			before, err := hopTimes(ctx, s.Admin)
			if err != nil {
				return err
			}
			r.seq[t.name].merge(sequential(ctx, t, smallPath, per))
			if t == tether {
				after, err := hopTimes(ctx, s.Admin)
				if err != nil {
					return err
				}
				hopDelta(r.seqHops, before, after)
			}
		}
	}
	_, other := seqCPU.stop()
	r.other = append(r.other, otherLoad{"sequential small GETs", other})
	for _, t := range targets {
		logf("small GET: %d concurrent workers for %v via %s", c.workers, c.duration, t.name)
		before, err := hopTimes(ctx, s.Admin)
		if err != nil {
			return err
		}
		m := startCPU()
		res := concurrent(ctx, t, smallPath, c.workers, c.duration)
		cpu, other := m.stop()
		r.cpu[t.name] = cpu
		r.other = append(r.other, otherLoad{fmt.Sprintf("%d concurrent via %s", c.workers, t.name), other})
		after, err := hopTimes(ctx, s.Admin)
		if err != nil {
			return err
		}
		if t == tether {
			hopDelta(r.conHops, before, after)
		}
		r.con[t.name] = res
		logf("  %.0f requests/s, p50 %s ms, p99 %s ms, %d errors", res.rps(), ms(res.lat.pct(0.5)), ms(res.lat.pct(0.99)), res.lat.errors)
	}
	return ctx.Err()
}

func bigList(ctx context.Context, c config, s *stack.Stack, targets []*target, r *results) error {
	direct := targets[0]
	logf("big list: creating %d ConfigMaps of %d bytes in %s", c.cmCount, c.cmSize, bigNamespace)
	start := time.Now()
	if err := fill(ctx, direct, c.cmCount, c.cmSize); err != nil {
		return err
	}
	logf("  created in %v", time.Since(start).Round(time.Millisecond))
	if l := listBig(ctx, direct); l.err != nil { // warm-up, not counted
		return l.err
	}
	pids := map[string]int{}
	for _, name := range services {
		if p := s.Process(name); p != nil {
			pids[name] = p.Pid()
		}
	}
	base := sampleRSS(pids)
	time.Sleep(time.Second)
	r.rssBase = base.finish()
	r.lists = map[string][]listing{}
	r.listCPU = map[string]map[string]time.Duration{}
	for _, t := range targets {
		r.listCPU[t.name] = map[string]time.Duration{}
	}
	peak := sampleRSS(pids)
	listsCPU := startCPU()
	for i := range c.lists {
		for _, t := range targets {
			cpu0 := cpuTimes()
			l := listBig(ctx, t)
			for k, v := range cpuDelta(cpu0, cpuTimes()) {
				r.listCPU[t.name][k] += v
			}
			r.lists[t.name] = append(r.lists[t.name], l)
			if l.err != nil {
				logf("big list %d via %s: %v", i+1, t.name, l.err)
				continue
			}
			logf("big list %d via %s: %.1f MB in %v (%.1f MB/s)", i+1, t.name, float64(l.bytes)/1e6, l.d.Round(time.Millisecond), float64(l.bytes)/1e6/l.d.Seconds())
		}
	}
	r.rssPeak = peak.finish()
	_, other := listsCPU.stop()
	r.other = append(r.other, otherLoad{"big lists", other})
	time.Sleep(2 * time.Second)
	after := sampleRSS(pids)
	time.Sleep(100 * time.Millisecond)
	r.rssAfter = after.finish()
	return ctx.Err()
}

// scanLogs returns the warnings and errors the services logged (they run at
// --log-level warn), at most five per service.
func scanLogs(dir string) []string {
	var out []string
	for _, name := range services[:4] {
		b, err := os.ReadFile(filepath.Join(dir, name+".log"))
		if err != nil {
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(l) != "" {
				lines = append(lines, l)
			}
		}
		for i, l := range lines {
			if i == 5 {
				out = append(out, fmt.Sprintf("%s: … %d more lines", name, len(lines)-5))
				break
			}
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			out = append(out, name+": "+l)
		}
	}
	return out
}
