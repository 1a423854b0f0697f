package main

import (
	"fmt"
	"strings"
	"time"
)

// tetherProcesses are the processes of Tether's request path; with the
// router in the gateway's process, "gateway" holds both.
var tetherProcesses = []string{"gateway", "router", "agent", "subscriber", "natsd"}

// tetherCPU sums the request path's CPU in cpu.
func tetherCPU(cpu map[string]time.Duration) time.Duration {
	var d time.Duration
	for _, p := range tetherProcesses {
		d += cpu[p]
	}
	return d
}

// topologies compares the two ways to run Tether's edge, measured in the
// same phases: a gateway calling a separate router over mTLS, and a
// gateway running the router in its own process (--router-url=embedded).
func topologies(b *strings.Builder, r *results) {
	if r.seq["embedded"] == nil {
		return
	}
	c := r.cfg
	b.WriteString("## The router in the gateway's process\n\n")
	b.WriteString("The same stack has a second gateway started with `--router-url=embedded`: its router runs in the gateway's process, on its own NATS connection, and the gateway calls its Connect handler in the process (no HTTP/2, no TLS, no socket). Both gateways reach the same NATS, subscriber and agent; each was measured in the same phases as the other, interleaved where the phase interleaves. CPU is that of the request path's processes (gateway, router, agent, subscriber, NATS) over the phase, whichever gateway was idle meanwhile included.\n\n")
	b.WriteString("| Figure | Direct | Tether, separate router | Tether, router in the gateway |\n|---|---:|---:|---:|\n")
	sd, st, se := r.seq["direct"], r.seq["tether"], r.seq["embedded"]
	added := func(s *samples, q float64) string {
		return fmt.Sprintf("%s (+%s)", ms(s.pct(q)), ms(s.pct(q)-sd.pct(q)))
	}
	fmt.Fprintf(b, "| Small GET p50, sequential (ms) | %s | %s | %s |\n", ms(sd.pct(0.5)), added(st, 0.5), added(se, 0.5))
	fmt.Fprintf(b, "| Small GET p99, sequential (ms) | %s | %s | %s |\n", ms(sd.pct(0.99)), added(st, 0.99), added(se, 0.99))
	cd, ct, ce := r.con["direct"], r.con["tether"], r.con["embedded"]
	fmt.Fprintf(b, "| Small GET requests/s, %d concurrent | %.0f | %.0f (×%.2f) | %.0f (×%.2f) |\n", c.workers, cd.rps(), ct.rps(), ratio(ct.rps(), cd.rps()), ce.rps(), ratio(ce.rps(), cd.rps()))
	perReq := func(name string) string {
		n := len(r.con[name].lat.d)
		if n == 0 {
			return "—"
		}
		return ms(tetherCPU(r.cpu[name]) / time.Duration(n))
	}
	fmt.Fprintf(b, "| CPU per small request, the request path's processes (ms) | | %s | %s |\n", perReq("tether"), perReq("embedded"))
	mbD, _ := mbps(r.lists["direct"])
	mbT, _ := mbps(r.lists["tether"])
	mbE, _ := mbps(r.lists["embedded"])
	fmt.Fprintf(b, "| Big list (MB/s) | %.1f | %.1f (×%.2f) | %.1f (×%.2f) |\n", mbD, mbT, ratio(mbT, mbD), mbE, ratio(mbE, mbD))
	perMB := func(name string) string {
		var bytes int64
		for _, l := range r.lists[name] {
			if l.err == nil {
				bytes += l.bytes
			}
		}
		if bytes == 0 {
			return "—"
		}
		return msf(dms(tetherCPU(r.listCPU[name])) / (float64(bytes) / 1e6))
	}
	fmt.Fprintf(b, "| CPU per MB of list body, the request path's processes (ms) | | %s | %s |\n", perMB("tether"), perMB("embedded"))
	fmt.Fprintf(b, "| Failed requests (all phases) | | %d | %d |\n\n", errCount(r, "tether"), errCount(r, "embedded"))
}
