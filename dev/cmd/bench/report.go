package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// Targets from the issue.
const (
	targetAddedP50 = 0.45 // ms added to a small GET's p50
	targetRPS      = 0.40 // of direct requests/s at 64 concurrent
	targetMBps     = 0.50 // of direct MB/s on the big list
	targetFlat     = 0.20 // RSS growth while streaming, as a share of the body
)

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d CPUs (nproc), %s, Linux %s, %s", runtime.NumCPU(), model, strings.TrimSpace(string(kernel)), runtime.Version())
}

func header(b *strings.Builder, title string, r *results) {
	fmt.Fprintf(b, "# %s\n\n", title)
	fmt.Fprintf(b, "- Date: %s\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(b, "- Tether: commit %s\n", r.commit)
	fmt.Fprintf(b, "- Machine: %s\n", machine())
	fmt.Fprintf(b, "- Kubernetes: %s (etcd, kube-apiserver, kube-controller-manager from hack/kube, on loopback)\n", r.k8s)
	cmd := "`make bench` (`go run ./dev/cmd/bench --out bench/results`)"
	if r.cfg.quick {
		cmd = "`go run ./dev/cmd/bench --quick` (smoke run: fewer iterations, not for comparison)"
	}
	fmt.Fprintf(b, "- Command: %s\n", cmd)
}

func coreReport(r *results) string {
	var b strings.Builder
	c := r.cfg
	header(&b, "Core path: Tether vs direct access", r)
	fmt.Fprintf(&b, "- Clients: one Go http.Client per target, HTTP/2 over TLS (direct answered %s, Tether %s), Bearer token of the admin user; services at `--log-level warn`, traces kept in-process\n", r.proto["direct"], r.proto["tether"])
	fmt.Fprintf(&b, "- Everything (client, gateway, router, NATS, subscriber, agent, kube-apiserver, etcd) shares the same %d cores\n", runtime.NumCPU())
	var worst otherLoad
	for _, o := range r.other {
		if o.share > worst.share {
			worst = o
		}
	}
	fmt.Fprintf(&b, "- Other load: processes outside the bench used at most %.1f%% of the machine's CPU in any phase (%s)", 100*worst.share, worst.phase)
	if worst.share > 0.05 {
		b.WriteString(": **the machine was not quiet; figures from that phase are low**")
	}
	b.WriteString("\n\n")

	sd, st := r.seq["direct"], r.seq["tether"]
	cd, ct := r.con["direct"], r.con["tether"]
	addedP50 := float64(st.pct(0.5)-sd.pct(0.5)) / float64(time.Millisecond)
	rpsRatio := ratio(ct.rps(), cd.rps())
	mbD, bodyD := mbps(r.lists["direct"])
	mbT, _ := mbps(r.lists["tether"])
	mbRatio := ratio(mbT, mbD)

	b.WriteString("## Results\n\n| Figure | Direct | Tether | Tether vs direct |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| Small GET p50, sequential (ms) | %s | %s | +%s ms |\n", ms(sd.pct(0.5)), ms(st.pct(0.5)), msf(addedP50))
	fmt.Fprintf(&b, "| Small GET p99, sequential (ms) | %s | %s | +%s ms |\n", ms(sd.pct(0.99)), ms(st.pct(0.99)), ms(st.pct(0.99)-sd.pct(0.99)))
	fmt.Fprintf(&b, "| Small GET requests/s, %d concurrent | %.0f | %.0f | ×%.2f |\n", c.workers, cd.rps(), ct.rps(), rpsRatio)
	fmt.Fprintf(&b, "| Small GET p50, %d concurrent (ms) | %s | %s | ×%.2f |\n", c.workers, ms(cd.lat.pct(0.5)), ms(ct.lat.pct(0.5)), ratio(float64(ct.lat.pct(0.5)), float64(cd.lat.pct(0.5))))
	fmt.Fprintf(&b, "| Small GET p99, %d concurrent (ms) | %s | %s | ×%.2f |\n", c.workers, ms(cd.lat.pct(0.99)), ms(ct.lat.pct(0.99)), ratio(float64(ct.lat.pct(0.99)), float64(cd.lat.pct(0.99))))
	fmt.Fprintf(&b, "| Big list, %.1f MB JSON (MB/s) | %.1f | %.1f | ×%.2f |\n", float64(bodyD)/1e6, mbD, mbT, mbRatio)
	fmt.Fprintf(&b, "| Failed requests (all phases) | %d | %d | |\n\n", errCount(r, "direct"), errCount(r, "tether"))
	fmt.Fprintf(&b, "Sequential: %d warm-up requests per target, then %d requests at concurrency 1 in %d interleaved rounds (direct, Tether, direct, …). Concurrent: %d workers for %v per target, direct first. Big list: `GET /api/v1/namespaces/%s/configmaps` (%d ConfigMaps of %d KB of random base64, `Accept-Encoding: identity`), %d times per target, interleaved; MB/s is body bytes over time from request to the body's end.\n\n",
		c.warm, c.seqN, c.rounds, c.workers, c.duration, bigNamespace, c.cmCount, c.cmSize/1000, c.lists)

	topologies(&b, r)

	body := float64(bodyD)
	growth := func(svc string) float64 { return float64(r.rssPeak[svc]-r.rssBase[svc]) * 1024 }
	b.WriteString("## Targets\n\n| Target | Measured | Result |\n|---|---:|---|\n")
	fmt.Fprintf(&b, "| Added p50 of a small GET under %.2f ms | +%s ms | %s |\n", targetAddedP50, msf(addedP50), passMiss(addedP50 < targetAddedP50))
	fmt.Fprintf(&b, "| At least %.2f of direct requests/s at %d concurrent | %.2f | %s |\n", targetRPS, c.workers, rpsRatio, passMiss(rpsRatio >= targetRPS))
	fmt.Fprintf(&b, "| At least %.2f of direct MB/s on the big list | %.2f | %s |\n", targetMBps, mbRatio, passMiss(mbRatio >= targetMBps))
	identP50 := dms(r.identSign.pct(0.5) + r.identVerify.pct(0.5))
	identErrs := r.identSign.errors + r.identVerify.errors + r.identVerifySig.errors
	fmt.Fprintf(&b, "| Signed identity (gateway signs and MACs, agent checks the MAC) p50 under %.2f ms | %.3f ms (sign %.3f, check %.3f; p99 %.3f and %.3f; a cluster's first request through a gateway, checked by signature: %.3f; %d failed) | %s |\n",
		targetIdentityP50, identP50, dms(r.identSign.pct(0.5)), dms(r.identVerify.pct(0.5)), dms(r.identSign.pct(0.99)), dms(r.identVerify.pct(0.99)),
		dms(r.identSign.pct(0.5)+r.identVerifySig.pct(0.5)), identErrs, passMiss(identP50 < targetIdentityP50 && identErrs == 0))
	for _, svc := range []string{"gateway", "subscriber"} {
		fmt.Fprintf(&b, "| Flat %s memory while streaming (peak − baseline under %.0f%% of the %.0f MB body) | %+.1f MB | %s |\n",
			svc, targetFlat*100, body/1e6, growth(svc)/1e6, passMiss(body > 0 && growth(svc) < targetFlat*body))
	}

	b.WriteString("\n## Memory while streaming the big list\n\n")
	b.WriteString("VmRSS from /proc/<pid>/status, sampled every 50 ms: baseline over 1 s before the lists, peak during all of them, and 2 s after.\n\n")
	b.WriteString("| Service | Baseline (MiB) | Peak (MiB) | Peak − baseline (MiB) | Share of body | After (MiB) |\n|---|---:|---:|---:|---:|---:|\n")
	for _, svc := range services {
		g := growth(svc)
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %+.1f | %.0f%% | %.1f |\n", svc, kib(r.rssBase[svc]), kib(r.rssPeak[svc]), g/(1<<20), 100*ratio(g, body), kib(r.rssAfter[svc]))
	}
	b.WriteString("\n")
	whereTime(&b, r)
	b.WriteString("## Problems seen\n\n")
	problems := 0
	for _, name := range []string{"direct", "tether", "embedded"} {
		if n, first := errDetail(r, name); n > 0 {
			fmt.Fprintf(&b, "- %d failed requests via %s; first: `%s`\n", n, name, first)
			problems++
		}
	}
	for _, l := range r.tetherErrs {
		fmt.Fprintf(&b, "- log: `%s`\n", strings.ReplaceAll(l, "`", "'"))
		problems++
	}
	if problems == 0 {
		b.WriteString("None: every request answered 200 OK and no service logged a warning or error.\n")
	}
	return b.String()
}

func kib(v int64) float64 { return float64(v) / 1024 }

func errCount(r *results, name string) int { n, _ := errDetail(r, name); return n }

func errDetail(r *results, name string) (int, string) {
	n, first := r.seq[name].errors, r.seq[name].firstErr
	n += r.con[name].lat.errors
	if first == "" {
		first = r.con[name].lat.firstErr
	}
	for _, l := range r.lists[name] {
		if l.err != nil {
			n++
			if first == "" {
				first = l.err.Error()
			}
		}
	}
	return n, first
}

func dms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
