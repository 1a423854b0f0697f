// Command audit will keep Tether's append-only, queryable trail of every request and
// lifecycle event.
//
// Until its issue lands it is a placeholder: it connects to NATS, serves
// /healthz, /readyz and /metrics, and drains on SIGTERM.
package main

import (
	"os"

	"github.com/tether-dev/tether/lib/svc"
)

func main() {
	os.Exit(svc.RunPlaceholder("audit", "recording the audit trail"))
}
