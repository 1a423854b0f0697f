// Command bench measures Tether against direct access to the kube-apiserver
// on one machine: small-GET latency and throughput, a big list's transfer
// rate and the services' memory while it streams, where the added time goes,
// and, for ADR 001, core NATS request/reply against a JetStream work queue.
//
//	go run ./dev/cmd/bench --out bench/results    (make bench)
//	go run ./dev/cmd/bench --quick --out /tmp/b   (smoke run)
//
// A last concurrent Tether phase, not counted, takes CPU profiles of the
// services (--pprof on their admin endpoints) for the report.
//
// It writes core-path.md, nats-request-path.md, streams.md and
// identity-modes.md into --out and prints them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tether-dev/tether/dev/stack"
)

// config sizes the run; --quick shrinks every phase for a smoke test.
type config struct {
	out      string
	duration time.Duration
	quick    bool
	profile  bool

	warm, seqN, rounds int // sequential small GETs per target
	workers            int
	cmCount, cmSize    int // the big list
	lists              int
	natsN, natsWarm    int
	pfBytes            int64 // port-forwarded each way
	rttN               int   // exec round trips
}

const smallPath = "/api/v1/namespaces/default"

func main() {
	c := config{workers: 64}
	flag.StringVar(&c.out, "out", "bench/results", "folder the reports are written to")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "length of each throughput phase")
	flag.BoolVar(&c.quick, "quick", false, "fewer iterations and 2s phases: a smoke run")
	flag.BoolVar(&c.profile, "profile", true, "one more Tether phase, not counted, to take CPU profiles of the services")
	flag.Parse()
	if c.quick {
		c.warm, c.seqN, c.rounds = 50, 300, 2
		c.duration = 2 * time.Second
		c.cmCount, c.cmSize, c.lists = 20, 500_000, 2
		c.natsN, c.natsWarm = 500, 100
		c.pfBytes, c.rttN = 10<<20, 50
	} else {
		c.warm, c.seqN, c.rounds = 200, 2000, 4
		c.cmCount, c.cmSize, c.lists = 100, 500_000, 5
		c.natsN, c.natsWarm = 5000, 500
		c.pfBytes, c.rttN = 100<<20, 500
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...) }

func run(ctx context.Context, c config) error {
	w, err := stack.NewWorkspace(ctx, "tether-bench-", os.Stderr)
	if err != nil {
		return err
	}
	defer w.Close()
	root, dir, bin := w.Root, w.Dir, w.BinDir
	quiet := []string{"--log-level", "warn", "--pprof"}
	s, err := stack.Up(ctx, stack.Options{
		Root: root, BinDir: bin, StateDir: filepath.Join(dir, "state"), KubeBinDir: w.KubeBin, Log: os.Stderr,
		// A second gateway runs the router in its own process: one hop
		// less, measured in the same run (issue 15).
		EmbeddedRouter: true,
		Args:           map[string][]string{"gateway": quiet, "router": quiet, "subscriber": quiet, "agent": quiet},
	})
	if err != nil {
		return err
	}
	downed := false
	defer func() {
		if !downed {
			_ = s.Down()
		}
	}()

	r := &results{cfg: c, started: time.Now(), commit: commit(root)}
	direct, tether, embedded, err := targets(s)
	if err != nil {
		return err
	}
	r.k8s = k8sVersion(ctx, direct)
	if err := smallGets(ctx, c, s, []*target{direct, tether, embedded}, r); err != nil {
		return err
	}
	if err := bigList(ctx, c, s, []*target{direct, tether, embedded}, r); err != nil {
		return err
	}
	modes, err := identityModes(ctx, c, s, direct)
	if err != nil {
		return err
	}
	sr, err := benchStreams(ctx, c, s)
	if err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	if c.profile {
		r.profiles = profileTether(ctx, c, s, tether, bin, dir)
	}
	r.logs = filepath.Join(dir, "state", "logs")
	r.tetherErrs = scanLogs(r.logs)
	logf("stopping the stack")
	downed = true
	if err := s.Down(); err != nil {
		logf("stopping the stack: %v", err)
	}

	r.gzipC, r.gzipD = gzipCost()
	if r.identSign, r.identVerify, r.identVerifySig, err = identityCost(20000); err != nil {
		return fmt.Errorf("signed identity: %w", err)
	}
	logf("NATS: core request/reply vs JetStream work queue, %d iterations", c.natsN)
	nd, err := natsTempDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(nd)
	nr, err := benchNATS(ctx, nd, c.natsN, c.natsWarm)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	return writeReports(c.out, map[string]string{
		"core-path.md":         coreReport(r),
		"nats-request-path.md": natsReport(r, nr),
		"streams.md":           streamsReport(r, sr),
		"identity-modes.md":    identityReport(r, modes),
	})
}

// commit names the tree the binaries were built from: HEAD, and whether
// the services differ from it. Read-only git commands.
func commit(root string) string {
	c, dirty := stack.Commit(root, "services", "lib", "dev/stack", "dev/cmd/natsd")
	if dirty {
		c += " with uncommitted changes to the services"
	}
	return c
}

// targets are the kube-apiserver direct, Tether, and Tether through the
// gateway that runs its router in its own process.
func targets(s *stack.Stack) (direct, tether, embedded *target, err error) {
	dc, err := newClient(s.Kube.CAFile)
	if err != nil {
		return nil, nil, nil, err
	}
	tc, err := newClient(s.CAFile)
	if err != nil {
		return nil, nil, nil, err
	}
	ec, err := newClient(s.CAFile)
	if err != nil {
		return nil, nil, nil, err
	}
	direct = &target{name: "direct", base: s.Kube.URL, token: s.Kube.AdminToken, client: dc}
	tether = &target{name: "tether", base: s.GatewayURL + "/clusters/" + stack.ClusterID, token: s.Users["admin"].Token, client: tc}
	embedded = &target{name: "embedded", base: s.EmbeddedGatewayURL + "/clusters/" + stack.ClusterID, token: s.Users["admin"].Token, client: ec}
	return direct, tether, embedded, nil
}

func k8sVersion(ctx context.Context, t *target) string {
	code, body, err := t.send(ctx, http.MethodGet, "/version", "")
	if err != nil || code != http.StatusOK {
		return "unknown"
	}
	var v struct{ GitVersion string }
	if json.Unmarshal([]byte(body), &v) != nil {
		return "unknown"
	}
	return v.GitVersion
}

func writeReports(out string, reports map[string]string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var errs []error
	for name, report := range reports {
		fmt.Println(report)
		errs = append(errs, os.WriteFile(filepath.Join(out, name), []byte(report), 0o644))
	}
	return errors.Join(errs...)
}
