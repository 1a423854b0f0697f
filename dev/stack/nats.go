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
	"golang.org/x/crypto/bcrypt"

	"github.com/tether-dev/tether/dev/proc"
	"github.com/tether-dev/tether/lib/subject"
)

// natsRoles are what each service may do on NATS: a router sends requests
// and their frames and listens on its own inbox; a subscriber takes
// requests (only in the subscribers' queue group, so it never gets a copy
// of another's), session frames, answers routers, reports agent events and
// renews its lease;
// agent-registry alone writes cluster events and manages their stream, and
// projects the agent events; routers and subscribers may only read the
// cluster events. audit and autoscaler may do nothing yet. All answer
// pings. UserToken in a subject stands for the user's own name: each user
// reads only its own router inbox and its own _INBOX (ADR 012).
var natsRoles = map[string]struct{ publish, subscribe []string }{
	"router": {publish: append([]string{"tether.req.*", "tether.sess.*.*"}, followClusters...),
		subscribe: []string{"tether.rtr." + UserToken + ".>", subject.Inbox(UserToken) + ".>"}},
	"subscriber": {publish: append([]string{"tether.rtr.*.*.*", "tether.agents.*", subject.SubscriberLeasesAll}, followClusters...),
		subscribe: []string{"tether.req.* " + subject.QueueGroup, "tether.sess.*.*", subject.Inbox(UserToken) + ".>"}},
	"agent-registry": {publish: append(append([]string{"tether.clusters.*", "$JS.API.STREAM.CREATE.CLUSTERS", "$JS.API.STREAM.UPDATE.CLUSTERS"}, followClusters...), projectAgents...),
		subscribe: []string{subject.Inbox(UserToken) + ".>"}},
	"audit":      {},
	"autoscaler": {},
}

// UserToken stands for a NATS user's own name in natsRoles' subjects (the
// chart's tether.natsUsers writes it the same way).
const UserToken = "{user}"

// projectAgents is what agent-registry needs to consume the agent events
// with its durable consumer, keep their projection in a KV bucket, follow
// the subscribers' leases and sweep the streams of dead ones (ADR 014).
var projectAgents = []string{
	"tether.agents.*",
	"$JS.API.STREAM.CREATE.SUBSCRIBERS", "$JS.API.STREAM.UPDATE.SUBSCRIBERS", "$JS.API.STREAM.INFO.SUBSCRIBERS",
	"$JS.API.CONSUMER.CREATE.SUBSCRIBERS.>", "$JS.API.CONSUMER.DELETE.SUBSCRIBERS.>", "$JS.API.CONSUMER.INFO.SUBSCRIBERS.>", "$JS.API.CONSUMER.MSG.NEXT.SUBSCRIBERS.>",
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

// NATSUsers names the NATS users: one per service, or, for a service in
// instances, one per instance ("router-0", "router-1", ...), each with the
// service's permissions over its own name.
func NATSUsers(instances map[string]int) []string {
	var out []string
	for role := range natsRoles {
		if n := instances[role]; n > 0 {
			for i := range n {
				out = append(out, InstanceUser(role, i))
			}
			continue
		}
		out = append(out, role)
	}
	sort.Strings(out)
	return out
}

// InstanceUser is the NATS user of instance i of service, when the
// service logs in as one user per instance (NATSUsers).
func InstanceUser(service string, i int) string { return service + "-" + strconv.Itoa(i) }

// roleOf is the service whose permissions user has: its own name, or the
// name an instance user ("router-0") was made from.
func roleOf(user string) (string, bool) {
	if _, ok := natsRoles[user]; ok {
		return user, true
	}
	i := strings.LastIndexByte(user, '-')
	if i <= 0 {
		return "", false
	}
	if _, err := strconv.ParseUint(user[i+1:], 10, 32); err != nil {
		return "", false
	}
	_, ok := natsRoles[user[:i]]
	return user[:i], ok
}

// WriteNATSUsers gives each of users a new random password, writes each to
// a file of its own in dir (what the service reads), and natsd's --auth
// file, which holds only bcrypt hashes of them; it returns that file's path.
func WriteNATSUsers(dir string, users []string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	passwords := NewNATSPasswords(users)
	for name, pw := range passwords {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(pw), 0o600); err != nil {
			return "", fmt.Errorf("stack: %w", err)
		}
	}
	hashes, err := NATSHashes(passwords)
	if err != nil {
		return "", err
	}
	b, err := NATSAuth(hashes)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "auth.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	return path, nil
}

// natsInstances are the services of the stack that log in to NATS as one
// user per instance: each router reads only its own inbox.
func (s *Stack) natsInstances() map[string]int {
	routers := s.opts.Replicas
	if s.opts.EmbeddedRouter {
		routers++ // the router in gateway-embedded
	}
	return map[string]int{"router": routers, "subscriber": s.opts.Subscribers}
}

// NewNATSPasswords gives each of users a new random password.
func NewNATSPasswords(users []string) map[string]string {
	out := make(map[string]string, len(users))
	for _, name := range users {
		out[name] = randomHex(16)
	}
	return out
}

// NATSHashes are the bcrypt hashes of passwords, what a NATS server's
// configuration holds instead of them.
func NATSHashes(passwords map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(passwords))
	for name, pw := range passwords {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
		if err != nil {
			return nil, fmt.Errorf("stack: hashing %s's NATS password: %w", name, err)
		}
		out[name] = string(h)
	}
	return out, nil
}

// NATSAuth is natsd's --auth file: each user with its password's bcrypt
// hash and its subject permissions. A plaintext password is refused: the
// server's configuration never holds one.
func NATSAuth(hashes map[string]string) ([]byte, error) {
	type user struct {
		User      string   `json:"user"`
		Password  string   `json:"password"`
		Publish   []string `json:"publish"`
		Subscribe []string `json:"subscribe"`
		Responses bool     `json:"responses"`
	}
	var users []user
	for name, hash := range hashes {
		role, ok := roleOf(name)
		if !ok {
			return nil, fmt.Errorf("stack: no NATS permissions for user %q", name)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("stack: %s's NATS password is no bcrypt hash", name)
		}
		perm := natsRoles[role]
		users = append(users, user{User: name, Password: hash, Publish: perm.publish, Subscribe: ownSubjects(perm.subscribe, name),
			Responses: len(perm.subscribe) > 0})
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("stack: no NATS users")
	}
	sort.Slice(users, func(i, j int) bool { return users[i].User < users[j].User })
	return json.MarshalIndent(map[string]any{"users": users}, "", "  ")
}

// ownSubjects puts user's name where subjs say UserToken.
func ownSubjects(subjs []string, user string) []string {
	out := make([]string, len(subjs))
	for i, s := range subjs {
		out[i] = strings.ReplaceAll(s, UserToken, user)
	}
	return out
}

// NATSArgs are the flags that connect to the stack's NATS as user (a
// service, or one instance of it: NATSUser), over TLS.
func (s *Stack) NATSArgs(user string) []string {
	return []string{"--nats-url", s.NATSURL, "--nats-user", user, "--nats-password-file", filepath.Join(s.opts.StateDir, "nats-users", user),
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
