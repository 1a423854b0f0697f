package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tether-dev/tether/dev/proc"
)

// The services whose issues are still to come start, become ready on NATS,
// serve their admin endpoints and exit cleanly on SIGTERM.
func TestPlaceholderServices(t *testing.T) {
	for _, name := range []string{"audit", "autoscaler"} {
		t.Run(name, func(t *testing.T) {
			ports, err := proc.FreePorts(1)
			if err != nil {
				t.Fatal(err)
			}
			admin := fmt.Sprintf("127.0.0.1:%d", ports[0])
			p, err := proc.Start(name, filepath.Join(env.bin, name), filepath.Join(env.dir, "logs"), nil,
				append(env.stack.NATSArgs(name), "--admin-addr", admin)...)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = p.Stop(5 * time.Second) }()
			get := func(path string) (int, string) {
				resp, err := http.Get("http://" + admin + path)
				if err != nil {
					return 0, err.Error()
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			waitFor(t, 30*time.Second, func() bool {
				if p.Exited() {
					t.Fatal(p.ExitError())
				}
				code, _ := get("/readyz")
				return code == http.StatusOK
			})
			if code, _ := get("/healthz"); code != http.StatusOK {
				t.Fatalf("/healthz: %d", code)
			}
			if _, body := get("/metrics"); !strings.Contains(body, "tether_nats_reconnects_total") {
				t.Fatal("/metrics lacks the NATS reconnect counter")
			}
			if err := p.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("no exit within 30s of SIGTERM")
			}
			if c := p.ExitCode(); c != 0 {
				t.Fatalf("exit code %d after SIGTERM: %v", c, p.ExitError())
			}
		})
	}
}
