package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/dev/proc"
)

// natsUsers are what each service may do on NATS: a router sends requests
// and their frames and listens on its own inbox; a subscriber takes
// requests and session frames, answers routers and reports agent events;
// agent-registry alone writes cluster events and manages their stream, and
// projects the agent events; routers and subscribers may only read the
// cluster events. audit and autoscaler may do nothing yet. All
// answer pings and get JetStream replies on _INBOX.
var natsUsers = map[string]struct{ publish, subscribe []string }{
	"router":         {publish: append([]string{"tether.req.*", "tether.sess.*.*"}, followClusters...), subscribe: []string{"tether.rtr.*.*", "_INBOX.>"}},
	"subscriber":     {publish: append([]string{"tether.rtr.*.*", "tether.agents.*"}, followClusters...), subscribe: []string{"tether.req.*", "tether.sess.*.*", "_INBOX.>"}},
	"agent-registry": {publish: append(append([]string{"tether.clusters.*", "$JS.API.STREAM.CREATE.CLUSTERS", "$JS.API.STREAM.UPDATE.CLUSTERS"}, followClusters...), projectAgents...), subscribe: []string{"_INBOX.>"}},
	"audit":          {},
	"autoscaler":     {},
}

// projectAgents is what agent-registry needs to consume the agent events
// with its durable consumer and keep their projection in a KV bucket.
var projectAgents = []string{
	"$JS.API.INFO", "$JS.API.STREAM.CREATE.AGENTS", "$JS.API.STREAM.UPDATE.AGENTS", "$JS.API.STREAM.INFO.AGENTS",
	"$JS.API.CONSUMER.CREATE.AGENTS.>", "$JS.API.CONSUMER.DURABLE.CREATE.AGENTS.>", "$JS.API.CONSUMER.DELETE.AGENTS.>",
	"$JS.API.CONSUMER.INFO.AGENTS.>", "$JS.API.CONSUMER.MSG.NEXT.AGENTS.>", "$JS.ACK.AGENTS.>",
	"$JS.API.STREAM.CREATE.KV_AGENTS_STATE", "$JS.API.STREAM.UPDATE.KV_AGENTS_STATE", "$JS.API.STREAM.INFO.KV_AGENTS_STATE",
	"$JS.API.STREAM.MSG.GET.KV_AGENTS_STATE", "$JS.API.DIRECT.GET.KV_AGENTS_STATE.>", "$KV.AGENTS_STATE.>",
	"$JS.API.CONSUMER.CREATE.KV_AGENTS_STATE.>", "$JS.API.CONSUMER.DELETE.KV_AGENTS_STATE.>", "$JS.FC.>",
}

// followClusters is the JetStream API a service needs to read the CLUSTERS
// stream with an ordered consumer, and nothing that changes the stream.
var followClusters = []string{
	"$JS.API.STREAM.INFO.CLUSTERS",
	"$JS.API.CONSUMER.CREATE.CLUSTERS.>",
	"$JS.API.CONSUMER.DELETE.CLUSTERS.>",
	"$JS.API.CONSUMER.INFO.CLUSTERS.>",
	"$JS.API.CONSUMER.MSG.NEXT.CLUSTERS.>",
}

// writeNATSUsers writes natsd's --auth file, with a new password for each
// service in a file of its own, and returns the --auth file's path.
func (s *Stack) writeNATSUsers() (string, error) {
	dir := filepath.Join(s.opts.StateDir, "nats-users")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	passwords := NewNATSPasswords()
	for name, pw := range passwords {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(pw), 0o600); err != nil {
			return "", fmt.Errorf("stack: %w", err)
		}
	}
	b, err := NATSAuth(passwords)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "auth.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	return path, nil
}

// NewNATSPasswords gives every service's NATS user a new random password.
func NewNATSPasswords() map[string]string {
	out := make(map[string]string, len(natsUsers))
	for name := range natsUsers {
		out[name] = randomHex(16)
	}
	return out
}

// NATSAuth is natsd's --auth file: each service's user with its password
// and its subject permissions.
func NATSAuth(passwords map[string]string) ([]byte, error) {
	type user struct {
		User      string   `json:"user"`
		Password  string   `json:"password"`
		Publish   []string `json:"publish"`
		Subscribe []string `json:"subscribe"`
		Responses bool     `json:"responses"`
	}
	var users []user
	for name, perm := range natsUsers {
		pw := passwords[name]
		if pw == "" {
			return nil, fmt.Errorf("stack: no NATS password for %s", name)
		}
		users = append(users, user{User: name, Password: pw, Publish: perm.publish, Subscribe: perm.subscribe, Responses: len(perm.subscribe) > 0})
	}
	sort.Slice(users, func(i, j int) bool { return users[i].User < users[j].User })
	return json.MarshalIndent(map[string]any{"users": users}, "", "  ")
}

// NATSArgs are the flags that connect service to the stack's NATS as its
// own user, over TLS.
func (s *Stack) NATSArgs(service string) []string {
	return []string{"--nats-url", s.NATSURL, "--nats-user", service, "--nats-password-file", filepath.Join(s.opts.StateDir, "nats-users", service),
		"--nats-ca-file", s.CAFile}
}

// waitNATS waits until a NATS client can log in at url, over TLS, as a
// user with no permissions: a bare TCP probe would leave a TLS error in
// its log.
func (s *Stack) waitNATS(ctx context.Context, p *proc.Process, url string) error {
	pw, err := os.ReadFile(filepath.Join(s.opts.StateDir, "nats-users", "audit"))
	if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	return poll(ctx, p, 30*time.Second, func() bool {
		nc, err := nats.Connect(url, nats.RootCAs(s.CAFile), nats.UserInfo("audit", string(pw)), nats.Timeout(time.Second), nats.Name("stack-probe"))
		if err != nil {
			return false
		}
		nc.Close()
		return true
	})
}

// startNATS starts the NATS nodes, each listening on HostIP, as one
// cluster when there are several, and waits until clients can log in.
func (s *Stack) startNATS(ctx context.Context, auth string) error {
	n := s.opts.NATSNodes
	ports, err := proc.FreePorts(3 * n)
	if err != nil {
		return err
	}
	client, cluster, monitor := ports[:n], ports[n:2*n], ports[2*n:]
	s.natsPorts = client
	for i := range n {
		s.NATSURLs = append(s.NATSURLs, "nats://"+net.JoinHostPort(s.HostIP, strconv.Itoa(client[i])))
	}
	s.NATSURL = strings.Join(s.NATSURLs, ",")
	for i := range n {
		name := replicaName("natsd", i)
		dir := filepath.Join(s.opts.StateDir, "nats", fmt.Sprintf("node-%d", i))
		args := []string{"--server-name", name, "--host", s.HostIP, "--port", strconv.Itoa(client[i]), "--store-dir", dir, "--auth", auth,
			"--tls-cert", s.certFile("natsd"), "--tls-key", s.keyFile("natsd"), "--http-port", strconv.Itoa(monitor[i])}
		s.NATSMonitor = append(s.NATSMonitor, "http://"+net.JoinHostPort(s.HostIP, strconv.Itoa(monitor[i])))
		if n > 1 {
			var routes []string
			for j := range n {
				if j != i {
					routes = append(routes, net.JoinHostPort(s.HostIP, strconv.Itoa(cluster[j])))
				}
			}
			args = append(args, "--cluster-port", strconv.Itoa(cluster[i]), "--routes", strings.Join(routes, ","), "--cluster-ca", s.CAFile)
		}
		if _, err := s.start(ctx, name, append(args, s.opts.Args["natsd"]...)...); err != nil {
			return err
		}
	}
	for i := range n {
		if err := s.waitNATS(ctx, s.byName[replicaName("natsd", i)], s.NATSURLs[i]); err != nil {
			return err
		}
	}
	fmt.Fprintf(s.opts.Log, "stack: NATS ready (%d node(s): %s)\n", n, s.NATSURL)
	return nil
}
