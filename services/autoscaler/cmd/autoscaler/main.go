// Command autoscaler will scale the subscriber fleet from load events and rebalance
// long-lived agent connections.
//
// Until its issue lands it is a placeholder: it connects to NATS, serves
// /healthz, /readyz and /metrics, and drains on SIGTERM.
package main

import (
	"os"

	"github.com/tether-dev/tether/lib/svc"
)

func main() {
	os.Exit(svc.RunPlaceholder("autoscaler", "scaling subscribers"))
}
