package main

import (
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

func natsReport(r *results, n *natsResult) string {
	var b strings.Builder
	header(&b, "NATS request path: core request/reply vs a JetStream work queue", r)
	fmt.Fprintf(&b, "- NATS: embedded nats-server %s with JetStream (%s storage in a temporary folder), nats.go %s over loopback TCP; requester and responder on separate connections, in the bench process; the Tether stack was stopped first\n", n.srvVer, n.storage, modVersion("github.com/nats-io/nats.go"))
	fmt.Fprintf(&b, "- Each round trip: a %d-byte request answered with a %d-byte reply; %d sequential iterations after %d warm-up\n\n", n.payload, n.replyLen, n.iterations, n.warm)
	b.WriteString("For docs/adr/001-request-path-on-core-nats.md.\n\n")
	b.WriteString("| Path | p50 (ms) | p99 (ms) | Mean (ms) | Failed |\n|---|---:|---:|---:|---:|\n")
	row := func(name string, s *samples) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d |\n", name, ms(s.pct(0.5)), ms(s.pct(0.99)), ms(s.mean()), s.errors)
	}
	row("Core NATS: `nc.Request`, responder subscribed on the subject", &n.core)
	row("JetStream work queue: `js.Publish` (acked), pull consumer (`Consume`), reply by core publish to the inbox named in a header", &n.wq)
	row("… of which `js.Publish` until its PubAck", &n.pubAck)
	row("No responders: core `nc.Request` on a subject nobody listens on (200 tries)", &n.noResp)
	b.WriteString("\n")
	added := n.wq.pct(0.5) - n.core.pct(0.5)
	fmt.Fprintf(&b, "- The work queue adds %s ms to the p50 of one request (×%.1f core NATS), against a budget of %.2f ms added for the whole Tether path.\n",
		ms(added), ratio(float64(n.wq.pct(0.5)), float64(n.core.pct(0.5))), targetAddedP50)
	fmt.Fprintf(&b, "- No responders: core NATS answers a request for a subject with no subscriber in %s ms (p50) with `nats.ErrNoResponders`, which the router turns into a fast retry and then a 503.\n", ms(n.noResp.pct(0.5)))
	fmt.Fprintf(&b, "- A work queue has no such answer: a request published to `wq.gone` (in the stream, no consumer) was stored and acknowledged, the requester waited %v until its timeout, and the stream still held %d message(s) afterwards, to be delivered whenever a consumer appears, long after the client gave up.\n",
		n.wqHeld.Round(time.Millisecond), n.wqHeldMsgs)
	if n.noRespErr != "" {
		fmt.Fprintf(&b, "- Unexpected: %s\n", n.noRespErr)
	}
	if n.noResp.errors > 0 {
		fmt.Fprintf(&b, "- Unexpected: %d no-responder requests did not fail fast; first: %s\n", n.noResp.errors, n.noResp.firstErr)
	}
	return b.String()
}

// modVersion is the version of a module this binary was built with.
func modVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				return d.Version
			}
		}
	}
	return "(unknown version)"
}
