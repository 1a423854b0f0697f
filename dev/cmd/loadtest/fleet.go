package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tether-dev/tether/dev/proc"
	"github.com/tether-dev/tether/dev/stack"
)

// perProcess is how many agents one agentsim process runs: each holds two
// connections (and files) per agent, and a process's open files are
// limited (20,000 on the machine this was sized on).
const perProcess = 5000

// fleet is the agentsim processes that run the simulated agents.
type fleet struct {
	procs  []*proc.Process
	admins []string
	// incomplete: not every agent held a stream by the deadline.
	incomplete bool
}

// startFleet starts agents simulated agents over as many agentsim
// processes as they need, together at startRate agents a second, and waits
// until every agent holds a stream.
func startFleet(ctx context.Context, c config, a fleetArgs) (*fleet, error) {
	n := (c.agents + perProcess - 1) / perProcess
	ports, err := proc.FreePorts(n)
	if err != nil {
		return nil, err
	}
	f := &fleet{}
	for i := range n {
		first := i * perProcess
		count := min(perProcess, c.agents-first)
		admin := "127.0.0.1:" + strconv.Itoa(ports[i])
		p, err := proc.Start(fmt.Sprintf("agentsim-%d", i), a.agentsim, a.logDir, nil,
			"--admin-addr", admin, "--log-level", "warn", "--gateway-url", a.gatewayURL, "--gateway-ca", a.gatewayCA, "--token-file", a.adminTokenFile,
			"--subscriber-url", strings.Join(a.subscriberURLs, ","), "--subscriber-ca", a.subscriberCA, "--identity-root-key", a.identityRoot,
			"--agents", strconv.Itoa(count), "--first", strconv.Itoa(first), "--prefix", c.prefix, "--tenant", a.tenant,
			"--start-rate", strconv.FormatFloat(c.startRate/float64(n), 'f', -1, 64), "--watch-every", c.watchEvery().String())
		if err != nil {
			f.stop()
			return nil, err
		}
		f.procs, f.admins = append(f.procs, p), append(f.admins, admin)
	}
	// Past this, the fleet is measured as it stands: how many agents
	// connected is a figure too.
	deadline := time.Now().Add(time.Duration(float64(c.agents)/c.startRate*float64(time.Second)) + 3*time.Minute)
	for i, p := range f.procs {
		err := waitReady(ctx, p, "http://"+f.admins[i]+"/readyz", time.Until(deadline))
		switch {
		case errors.Is(err, errNotReady):
			f.incomplete = true
		case err != nil:
			f.stop()
			return nil, err
		}
	}
	return f, nil
}

func (f *fleet) stop() {
	for _, p := range f.procs {
		_ = p.Stop(time.Minute)
	}
}

// metric sums series over the fleet's processes.
func (f *fleet) metric(series string) float64 {
	var sum float64
	for _, a := range f.admins {
		v, _ := stack.MetricAt("http://"+a+"/metrics", series)
		sum += v
	}
	return sum
}

// logDir is where the fleet's logs go, beside the stack's.
func logDir(dir string) string { return filepath.Join(dir, "state", "logs") }
