package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tether-dev/tether/dev/stack"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/loadtest/driver"
)

// system is the Tether a run loads: the stack this command starts on this
// machine, or one deployed elsewhere (--target).
type system struct {
	// about describes it for the report.
	about string
	// procs are its processes the run samples.
	procs []process
	// fleet is what agentsim needs to bring its agents to it.
	fleet fleetArgs
	// gateways, ca and tokens are what the driver needs: the gateways'
	// URLs, the CA of their certificates, the load users' tokens.
	gateways []string
	ca       string
	tokens   []string
	// clusters is its ClusterService, as an administrator.
	clusters tetherv1connect.ClusterServiceClient
	// js reads the JetStream streams the fleet writes to; nil when the
	// run has no NATS credentials (a deployed Tether).
	js jetstream.JetStream
	// local is the stack this command started; nil for a deployed
	// Tether, where nothing can be killed from here (storm).
	local *stack.Stack
}

// fleetArgs are agentsim's flags that name the Tether it connects to.
type fleetArgs struct {
	gatewayURL, gatewayCA, adminTokenFile string
	subscriberURLs                        []string
	subscriberCA, identityRoot, tenant    string
	agentsim                              string // its binary
	logDir                                string
}

// deployed is how to reach a Tether deployed elsewhere (--target and the
// flags beside it).
type deployed struct {
	target       string // the gateways' URLs, comma-separated
	ca           string // PEM file: the CA of the gateways' certificates
	tokensFile   string // the load users' tokens: one a line, or tokens.csv rows
	adminToken   string // file: a platform administrator's token, to create the clusters
	agentsURL    string // the agents' endpoint (subscribers), comma-separated
	agentsCA     string // PEM file: the CA of the subscribers' certificates
	identityRoot string // PEM file: the identity root's public key
	metrics      string // name=URL,... of the processes' /metrics to sample
	tenant       string // the tenant of the simulated clusters and the load users
	agentsim     string // its binary; empty: built from this checkout
}

// check says what a deployed run lacks.
func (d deployed) check(scenario string) error {
	var missing []string
	for _, f := range []struct{ flag, v string }{
		{"--target-ca", d.ca}, {"--target-tokens", d.tokensFile}, {"--target-admin-token", d.adminToken},
		{"--agents-url", d.agentsURL}, {"--agents-ca", d.agentsCA}, {"--identity-root-key", d.identityRoot},
	} {
		if f.v == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("a deployed target needs %s as well", strings.Join(missing, ", "))
	}
	if scenario == "storm" {
		return errors.New("storm kills a subscriber process, which this command can do only to the stack it starts: against a deployed Tether, run loadtest/k6/storm.js (or SCENARIO=steady) and delete a subscriber pod yourself")
	}
	return nil
}

// deployedSystem is the Tether d names, with an agentsim built into
// binDir.
func deployedSystem(ctx context.Context, root, binDir, logDir string, d deployed) (*system, error) {
	tokens, err := readTokens(d.tokensFile)
	if err != nil {
		return nil, err
	}
	procs, err := metricsProcs(d.metrics)
	if err != nil {
		return nil, err
	}
	sim := d.agentsim
	if sim == "" {
		sim = filepath.Join(binDir, "agentsim")
		build := exec.CommandContext(ctx, "go", "build", "-o", sim, "./services/agent/cmd/agentsim")
		build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return nil, fmt.Errorf("building agentsim: %w", err)
		}
	}
	gateways := splitList(d.target)
	client, err := driver.Client(d.ca, time.Minute)
	if err != nil {
		return nil, err
	}
	admin, err := os.ReadFile(d.adminToken)
	if err != nil {
		return nil, fmt.Errorf("reading the administrator's token: %w", err)
	}
	about := fmt.Sprintf("a deployed Tether: gateways %s, agents' endpoint %s", strings.Join(gateways, ", "), d.agentsURL)
	if len(procs) == 0 {
		about += "; no process sampled (no --metrics), so the tables of process costs are empty"
	} else {
		about += fmt.Sprintf("; %d processes sampled by their /metrics", len(procs))
	}
	return &system{
		about: about,
		procs: procs,
		fleet: fleetArgs{gatewayURL: gateways[0], gatewayCA: d.ca, adminTokenFile: d.adminToken, subscriberURLs: splitList(d.agentsURL),
			subscriberCA: d.agentsCA, identityRoot: d.identityRoot, tenant: d.tenant, agentsim: sim, logDir: logDir},
		gateways: gateways, ca: d.ca, tokens: tokens,
		clusters: tetherv1connect.NewClusterServiceClient(&http.Client{Transport: bearer{token: strings.TrimSpace(string(admin)), next: client.Transport}}, gateways[0]),
	}, nil
}

// readTokens reads the load users' tokens: one a line, or tokens.csv rows
// (the gateway's --token-file: token,user,uid,"groups","tenants"), whose
// first field is the token.
func readTokens(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the load users' tokens: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rec, err := csv.NewReader(strings.NewReader(line)).Read()
		if err != nil || rec[0] == "" {
			return nil, fmt.Errorf("%s: a line that is neither a token nor a tokens.csv row: %q", path, line)
		}
		out = append(out, rec[0])
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no token", path)
	}
	return out, nil
}

// metricsProcs reads --metrics: name=URL pairs, comma-separated, sorted
// by name.
func metricsProcs(list string) ([]process, error) {
	var out []process
	for _, kv := range splitList(list) {
		name, url, ok := strings.Cut(kv, "=")
		if !ok || name == "" || !strings.HasPrefix(url, "http") {
			return nil, fmt.Errorf("--metrics: %q is not NAME=URL", kv)
		}
		out = append(out, process{name: name, metrics: url})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// bearer sends token with every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
