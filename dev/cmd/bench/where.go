package main

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"time"
)

func whereTime(b *strings.Builder, r *results) {
	b.WriteString("## Where the time goes\n\n")
	b.WriteString("Per hop, from the services' `tether_request_duration_seconds{hop}` histograms (time to the response head at that hop), scraped before and after the Tether phases: the mean per hop, next to the mean the client saw.\n\n")
	b.WriteString("| Mean (ms) | Sequential | 64 concurrent |\n|---|---:|---:|\n")
	sd, st := r.seq["direct"], r.seq["tether"]
	cd, ct := r.con["direct"], r.con["tether"]
	rows := []struct {
		name     string
		seq, con float64
	}{
		{"Client via Tether (whole request)", dms(st.mean()), dms(ct.lat.mean())},
		{"gateway: request in → head out", r.seqHops["gateway"].meanMS(), r.conHops["gateway"].meanMS()},
		{"router: Proxy call → head", r.seqHops["router"].meanMS(), r.conHops["router"].meanMS()},
		{"agent: call to kube-apiserver → head", r.seqHops["agent"].meanMS(), r.conHops["agent"].meanMS()},
		{"Client direct (whole request)", dms(sd.mean()), dms(cd.lat.mean())},
	}
	for _, row := range rows {
		fmt.Fprintf(b, "| %s | %s | %s |\n", row.name, msf(row.seq), msf(row.con))
	}
	b.WriteString("\n| Difference (ms) | Sequential | 64 concurrent |\n|---|---:|---:|\n")
	diffs := []struct {
		name string
		a, z int
	}{
		{"client − gateway: client↔gateway TLS/HTTP/2, body, client scheduling", 0, 1},
		{"gateway − router: gateway (auth, headers) and the gateway→router stream", 1, 2},
		{"router − agent: NATS, subscriber, agent stream, both ways", 2, 3},
		{"agent − direct: the agent's own API call vs the client's", 3, 4},
		{"Total added (client via Tether − client direct)", 0, 4},
	}
	for _, d := range diffs {
		fmt.Fprintf(b, "| %s | %s | %s |\n", d.name, msf(rows[d.a].seq-rows[d.z].seq), msf(rows[d.a].con-rows[d.z].con))
	}
	fmt.Fprintf(b, "\nHistogram counts: sequential %.0f/%.0f/%.0f, concurrent %.0f/%.0f/%.0f (gateway/router/agent).\n\n",
		r.seqHops["gateway"].count, r.seqHops["router"].count, r.seqHops["agent"].count,
		r.conHops["gateway"].count, r.conHops["router"].count, r.conHops["agent"].count)

	fmt.Fprintf(b, "CPU per request during the %d-concurrent phases (utime+stime from /proc, ms of CPU per request). With every process on the same %d cores, CPU bounds throughput.\n\n", r.cfg.workers, runtime.NumCPU())
	totD, totT := cpuTable(b, r.cpu, float64(len(cd.lat.d)), float64(len(ct.lat.d)))
	cores := float64(runtime.NumCPU())
	fmt.Fprintf(b, "CPU bound on requests/s (cores ÷ CPU per request): direct %.0f, Tether %.0f; measured %.0f and %.0f.\n\n",
		cores*1000/totD, cores*1000/totT, cd.rps(), ct.rps())

	_, bodyD := mbps(r.lists["direct"])
	mb := float64(bodyD) / 1e6 * float64(r.cfg.lists)
	b.WriteString("CPU per MB of body during the big lists (ms of CPU per MB):\n\n")
	cpuTable(b, r.listCPU, mb, mb)
	fmt.Fprintf(b, "For reference, on this machine compress/gzip at its default level costs %.1f ms per MB to compress and %.1f ms per MB to decompress this data (256 KiB chunks of random base64, measured after the stack stopped). Connect clients ask for gzipped messages and Connect handlers compress them unless a service opts out; a hop that spends about that much CPU per MB is compressing.\n\n", r.gzipC, r.gzipD)
	if len(r.profiles) == 0 {
		return
	}
	fmt.Fprintf(b, "### CPU profiles\n\nFrom one more %d-concurrent Tether phase of %v after the others (not counted above), `go tool pprof -top` of each service's CPU profile (`/debug/pprof/profile` on its admin endpoint, `--pprof`).\n\n", r.cfg.workers, r.cfg.duration)
	for _, svc := range profiled {
		fmt.Fprintf(b, "%s:\n\n```\n%s\n```\n\n", svc, r.profiles[svc])
	}
}

// cpuTable writes CPU per unit for each process, busiest via Tether first,
// and returns the totals.
func cpuTable(b *strings.Builder, cpu map[string]map[string]time.Duration, unitsD, unitsT float64) (float64, float64) {
	b.WriteString("| Process | Direct | Tether |\n|---|---:|---:|\n")
	names := map[string]bool{}
	for _, m := range cpu {
		for k, v := range m {
			if v > 0 {
				names[k] = true
			}
		}
	}
	var sorted []string
	for k := range names {
		sorted = append(sorted, k)
	}
	sort.Slice(sorted, func(i, j int) bool { return cpu["tether"][sorted[i]] > cpu["tether"][sorted[j]] })
	var totD, totT float64
	for _, k := range sorted {
		d, t := dms(cpu["direct"][k])/max(unitsD, 1), dms(cpu["tether"][k])/max(unitsT, 1)
		totD, totT = totD+d, totT+t
		fmt.Fprintf(b, "| %s | %s | %s |\n", k, msf(d), msf(t))
	}
	fmt.Fprintf(b, "| **total** | %s | %s |\n\n", msf(totD), msf(totT))
	return totD, totT
}
