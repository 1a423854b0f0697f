// Command agent-registry will project agent connect, disconnect and heartbeat events from
// JetStream into which cluster is connected where, and its health.
//
// Until its issue lands it is a placeholder: it connects to NATS, serves
// /healthz, /readyz and /metrics, and drains on SIGTERM.
package main

import (
	"os"

	"github.com/tether-dev/tether/lib/svc"
)

func main() {
	os.Exit(svc.RunPlaceholder("agent-registry", "projecting agent events"))
}
