// Package stack runs the whole of Tether on one machine, each service as its
// own process, in front of a real kube-apiserver: for `make run`, the
// end-to-end tests and the benchmarks alike.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-dev/tether/dev/idp"
	"github.com/tether-dev/tether/dev/kube"
	"github.com/tether-dev/tether/dev/pki"
	"github.com/tether-dev/tether/dev/proc"
	"github.com/tether-dev/tether/lib/agentcred"
)

// ClusterID is the id of the cluster the stack's agent serves.
const ClusterID = "dev"

// User is someone the gateway knows by a static token.
type User struct {
	Name    string
	Token   string
	Groups  []string
	Tenants []string
}

// DefaultUsers: admin has full rights in the cluster and administers
// Tether's clusters; alice is a tenant user whose rights the cluster's RBAC
// decides; mallory belongs to another tenant and must see nothing of this
// cluster.
func DefaultUsers() []User {
	return []User{
		{Name: "admin", Groups: []string{ClusterAdmins, AdminGroup}, Tenants: []string{"acme"}},
		{Name: "alice", Groups: []string{"acme:developers"}, Tenants: []string{"acme"}},
		{Name: "mallory", Groups: []string{"globex:developers"}, Tenants: []string{"globex"}},
	}
}

// AdminGroup is the group whose members may create and delete clusters.
const AdminGroup = "tether:admins"

// OIDCUsers log in through the development identity provider (dev/idp)
// with `tetherctl login`: ada of tenant acme, grace of tenant globex, and
// ops, a platform administrator.
func OIDCUsers() []idp.User {
	return []idp.User{
		{Name: "ada", Email: "ada@acme.example", Groups: []string{"acme:developers"}, Tenants: []string{"acme"}},
		{Name: "grace", Email: "grace@globex.example", Groups: []string{"globex:developers"}, Tenants: []string{"globex"}},
		{Name: "ops", Email: "ops@tether.example", Groups: []string{AdminGroup}, Tenants: []string{"acme", "globex"}},
		// A platform operator's break-glass account: its group passes the
		// gateway by name, and only agents whose cluster allows it serve it.
		{Name: "root", Email: "root@tether.example", Groups: []string{BreakGlassGroup}, Tenants: []string{"acme"}},
	}
}

// BreakGlassGroup is the development stack's break-glass group: the
// gateway lets it through from ID tokens (--oidc-allow-system-groups), and
// an agent serves it only with --allow-system-names naming it (ADR 011).
const BreakGlassGroup = "system:masters"

// OIDCClientID is the client id tetherctl logs in with.
const OIDCClientID = "tether"

// Options configure Up.
type Options struct {
	// Root is the repository root; BinDir holds the built binaries.
	Root   string
	BinDir string
	// StateDir keeps certificates, logs, NATS data and kubeconfigs.
	StateDir string
	// AgentKubeconfig points the agent at an existing cluster. Empty: start
	// a real etcd, kube-apiserver and controller manager under StateDir.
	AgentKubeconfig string
	// KubeBinDir holds etcd, kube-apiserver, kube-controller-manager and
	// kube-scheduler.
	KubeBinDir string
	Users      []User
	// NoAgentClusters are clusters of tenant acme with no agent, so
	// requests for them must fail with 503.
	NoAgentClusters []string
	// Args adds flags per service, e.g. shorter keepalives in tests; a
	// service's flags apply to its replicas too.
	Args map[string][]string
	// Replicas of gateway and router (default 1). Replica 0 is "gateway",
	// "router"; replica i is "gateway-i" and so on, each gateway calling
	// its own router first and the others when that one fails.
	Replicas int
	// EmbeddedRouter also starts a gateway that runs its router in its
	// own process ("gateway-embedded", gateway --router-url=embedded, at
	// EmbeddedGatewayURL), beside the others: make bench measures both.
	EmbeddedRouter bool
	// Subscribers is how many subscribers run: "subscriber",
	// "subscriber-1", ... (default Replicas).
	Subscribers int
	// NATSNodes is how many NATS servers run ("natsd", "natsd-1", ...):
	// more than one make a cluster, with every JetStream stream replicated
	// on each (make run CLUSTER=3).
	NATSNodes int
	// AgentClusters are more clusters of tenant acme, each served by an
	// agent of its own ("agent-<id>"), all of them backed by the same
	// kube-apiserver.
	AgentClusters []string
	// TestHost names services (subscriber replicas) that run on a test
	// host: a network namespace with its own address, which Partition can
	// cut off from NATS. NATS and agent-registry then listen on this
	// machine's address toward it. Needs root and iptables.
	TestHost []string
	Log      io.Writer
}

// Stack is a running Tether.
type Stack struct {
	// internal is the operator's transport to the services, made once.
	internal struct {
		once sync.Once
		rt   http.RoundTripper
		err  error
	}
	GatewayURL string // https://127.0.0.1:PORT
	// GatewayURLs are every replica's gateway, GatewayURL first.
	GatewayURLs []string
	// EmbeddedGatewayURL is the gateway with the router in its process,
	// with Options.EmbeddedRouter.
	EmbeddedGatewayURL string
	CAFile             string // CA of the gateway's serving certificate
	NATSURL            string
	// IssuerURL is the development identity provider (dev/idp); IdPKeyDir
	// holds its signing keys, for tests that forge tokens with them.
	IssuerURL string
	IdPKeyDir string
	// RegistryURL is agent-registry's ClusterService, for tests that create
	// and delete clusters as an operator.
	RegistryURL string
	// SubscriberURL is where agents connect and enroll; SubscriberURLs
	// every replica's, SubscriberURL first.
	SubscriberURL  string
	SubscriberURLs []string
	// NATSURLs are every NATS node's client URL; NATSURL lists them all.
	// NATSMonitor are their monitoring endpoints (/varz, /connz, /routez,
	// /jsz).
	NATSURLs    []string
	NATSMonitor []string
	// Identity are the identity root and the gateways' signing key: tests
	// that play a compromised hop forge and replay with them.
	Identity pki.IdentityKeys
	// HostIP is where NATS and agent-registry listen: loopback, or this
	// machine's address toward the test host.
	HostIP string
	Kube   *kube.ControlPlane // nil with AgentKubeconfig
	// NodeName is the development node running pods as host processes;
	// empty with AgentKubeconfig.
	NodeName string
	// AgentKubeconfig is what the agent uses to reach its cluster.
	AgentKubeconfig string
	Users           map[string]User
	// Admin is each service's admin address (/healthz, /readyz, /metrics).
	Admin map[string]string

	opts   Options
	procs  []*proc.Process
	byName map[string]*proc.Process
	args   map[string][]string
	ca     *pki.CA
	host   *testHost
	// natsPorts are the NATS nodes' client ports, which a partition cuts.
	natsPorts []int
}

// Up starts everything and waits until each service is ready. On error it
// stops whatever it started.
func Up(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.Root == "" || o.BinDir == "" || o.StateDir == "" || o.Log == nil {
		return nil, errors.New("stack: Root, BinDir, StateDir and Log are required")
	}
	if o.AgentKubeconfig == "" && o.KubeBinDir == "" {
		return nil, errors.New("stack: KubeBinDir is required without AgentKubeconfig")
	}
	if len(o.Users) == 0 {
		o.Users = DefaultUsers()
	}
	o.Replicas = max(o.Replicas, 1)
	if o.Subscribers <= 0 {
		o.Subscribers = o.Replicas
	}
	o.NATSNodes = max(o.NATSNodes, 1)
	for _, d := range []string{"logs", "pki", "nats"} {
		if err := os.MkdirAll(filepath.Join(o.StateDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
	}
	s := &Stack{opts: o, Users: map[string]User{}, Admin: map[string]string{}, byName: map[string]*proc.Process{}, args: map[string][]string{}, HostIP: "127.0.0.1"}
	defer func() {
		if err != nil {
			_ = s.Down()
		}
	}()
	if len(o.TestHost) > 0 {
		if s.host, err = newTestHost(); err != nil {
			return nil, err
		}
		s.HostIP = s.host.hostIP
		fmt.Fprintf(o.Log, "stack: test host %s at %s (this machine %s) for %s\n", s.host.name, s.host.ip, s.host.hostIP, strings.Join(o.TestHost, ", "))
	}

	// The dev CA outlives restarts, so a kubeconfig printed once keeps working.
	s.ca, err = pki.LoadOrCreateCA(filepath.Join(o.StateDir, "pki"), "tether-dev-ca")
	if err != nil {
		return nil, err
	}
	s.CAFile = s.ca.CertPath
	cert, key, err := s.ca.IssueServer(filepath.Join(o.StateDir, "pki"), "gateway", []string{"127.0.0.1", "localhost"})
	if err != nil {
		return nil, err
	}

	s.AgentKubeconfig = o.AgentKubeconfig
	if s.AgentKubeconfig == "" {
		s.Kube, err = kube.Start(ctx, kube.Config{BinDir: o.KubeBinDir, Dir: filepath.Join(o.StateDir, "kube"), Log: o.Log})
		if err != nil {
			return nil, err
		}
		s.AgentKubeconfig = s.Kube.AdminKubeconfig
		if err := BindClusterAdmins(ctx, s.Kube.AdminKubeconfig); err != nil {
			return nil, err
		}
		if err := s.startNode(ctx); err != nil {
			return nil, err
		}
	}

	ports, err := proc.FreePorts(4)
	if err != nil {
		return nil, err
	}
	regPort := ports[0]
	s.RegistryURL = "https://" + net.JoinHostPort(s.HostIP, strconv.Itoa(regPort))
	s.IssuerURL = "https://" + addr(ports[1])

	tokens, err := s.writeTokens()
	if err != nil {
		return nil, err
	}
	// The key agent-registry signs agent credentials with, and its public
	// half the subscribers check them with. Kept across restarts, so the
	// agent's stored credential stays good.
	signingKey, publicKey := filepath.Join(o.StateDir, "pki", "agent-signing.key"), filepath.Join(o.StateDir, "pki", "agent-signing.pub")
	if _, err := os.Stat(publicKey); err != nil {
		if err := agentcred.WriteKeyPair(signingKey, publicKey); err != nil {
			return nil, err
		}
	}

	// The identity root agents trust, and the key it certified with
	// which the gateways sign who makes each request (ADR 011).
	if s.Identity, err = pki.WriteIdentityKeys(filepath.Join(o.StateDir, "pki")); err != nil {
		return nil, err
	}

	auth, err := WriteNATSUsers(filepath.Join(s.opts.StateDir, "nats-users"), NATSUsers(s.natsInstances()))
	if err != nil {
		return nil, err
	}
	// Every internal hop as in production: each service has a
	// certificate of the stack's CA, NATS speaks TLS.
	hosts := []string{"127.0.0.1", "localhost", s.HostIP}
	if s.host != nil {
		hosts = append(hosts, s.host.ip)
	}
	for _, name := range []string{"natsd", "agent-registry", "subscriber", "router", "gateway", operator} {
		names := hosts
		if name == "gateway" {
			// It is also the gateway's serving certificate (same files).
			names = append(slices.Clone(hosts), gatewayHostNames()...)
		}
		if _, _, err := s.ca.IssueService(s.pkiDir(), name, names); err != nil {
			return nil, err
		}
	}
	// The agents' endpoint, public in production: a server certificate
	// of its own, also for the name agents behind a proxy use.
	if _, _, err := s.ca.IssueServer(s.pkiDir(), subscriberTLS, append(hosts, SubscriberHost)); err != nil {
		return nil, err
	}
	if err := s.startNATS(ctx, auth); err != nil {
		return nil, err
	}
	if err := s.startIdP(ctx); err != nil {
		return nil, err
	}

	// The subscribers' addresses come first: agent-registry writes where
	// agents connect into their install manifests.
	subs := make([]subscriberAt, o.Subscribers)
	for i := range subs {
		if subs[i], err = s.subscriberAt(i); err != nil {
			return nil, err
		}
		s.SubscriberURLs = append(s.SubscriberURLs, subs[i].url)
	}
	s.SubscriberURL = s.SubscriberURLs[0]
	regAdmin, err := proc.FreePorts(1)
	if err != nil {
		return nil, err
	}
	if err := s.startService(ctx, "agent-registry", addr(regAdmin[0]), append([]string{"--listen", net.JoinHostPort(s.HostIP, strconv.Itoa(regPort)),
		"--signing-key", signingKey, "--agent-endpoint", s.SubscriberURL, "--stream-replicas", strconv.Itoa(o.NATSNodes),
		"--identity-root-key", s.Identity.RootPublic,
		"--cluster-callers", "gateway," + operator}, s.internalArgs("agent-registry", "agent-registry")...)...); err != nil {
		return nil, err
	}
	for i, sub := range subs {
		if err := s.startService(ctx, sub.name, sub.admin, append([]string{"--listen", sub.listen, "--id", InstanceUser("subscriber", i),
			"--tls-cert", s.certFile(subscriberTLS), "--tls-key", s.keyFile(subscriberTLS),
			"--credential-keys", publicKey, "--registry-url", s.RegistryURL}, s.internalArgs("subscriber", InstanceUser("subscriber", i))...)...); err != nil {
			return nil, err
		}
	}
	routerURLs := make([]string, o.Replicas)
	for i := range o.Replicas {
		ports, err := proc.FreePorts(2)
		if err != nil {
			return nil, err
		}
		name := replicaName("router", i)
		routerURLs[i] = "https://" + addr(ports[0])
		if err := s.startService(ctx, name, addr(ports[1]), append([]string{"--listen", addr(ports[0]), "--id", InstanceUser("router", i)}, s.internalArgs("router", InstanceUser("router", i))...)...); err != nil {
			return nil, err
		}
	}
	for i := range o.Replicas {
		ports, err := proc.FreePorts(2)
		if err != nil {
			return nil, err
		}
		// Its own router first, then the others: a gateway whose router
		// died sends new requests on to another.
		own := append([]string{routerURLs[i]}, append(append([]string{}, routerURLs[:i]...), routerURLs[i+1:]...)...)
		if err := s.startService(ctx, replicaName("gateway", i), addr(ports[1]), s.gatewayArgs(ports[0], own, tokens, cert, key)...); err != nil {
			return nil, err
		}
		s.GatewayURLs = append(s.GatewayURLs, "https://"+addr(ports[0]))
	}
	s.GatewayURL = s.GatewayURLs[0]
	if o.EmbeddedRouter {
		ports, err := proc.FreePorts(2)
		if err != nil {
			return nil, err
		}
		// Its router logs in to NATS as one router more.
		args := append(s.gatewayArgs(ports[0], []string{"embedded"}, tokens, cert, key), s.NATSArgs(InstanceUser("router", o.Replicas))...)
		if err := s.startService(ctx, "gateway-embedded", addr(ports[1]), args...); err != nil {
			return nil, err
		}
		s.EmbeddedGatewayURL = "https://" + addr(ports[0])
	}

	// The clusters, created as an operator would with tetherctl; each
	// bootstrap token goes to its agent.
	bootstrap := map[string]string{}
	for _, id := range append(append([]string{ClusterID}, o.NoAgentClusters...), o.AgentClusters...) {
		bt, err := s.EnsureCluster(ctx, id, "acme")
		if err != nil {
			return nil, err
		}
		bootstrap[id] = bt
	}
	for i, id := range append([]string{ClusterID}, o.AgentClusters...) {
		if err := s.startAgent(ctx, i, id, bootstrap[id]); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// replicaName is "router" for replica 0, "router-i" for replica i.
func replicaName(service string, i int) string {
	if i == 0 {
		return service
	}
	return fmt.Sprintf("%s-%d", service, i)
}

// gatewayArgs are a gateway's flags: its port, its router's, its
// credentials and both ways of authenticating users.
func (s *Stack) gatewayArgs(port int, routers []string, tokens, cert, key string) []string {
	return append([]string{"--listen", addr(port), "--router-url", strings.Join(routers, ","), "--registry-url", s.RegistryURL,
		"--tokens", tokens, "--tls-cert", cert, "--tls-key", key, "--identity-key", s.Identity.GatewayKey,
		"--oidc-issuer-url", s.IssuerURL, "--oidc-client-id", OIDCClientID, "--oidc-ca-file", s.CAFile, "--oidc-username-claim", "email",
		"--oidc-allow-system-groups", BreakGlassGroup,
		"--cluster-domain", ClusterDomain},
		s.internalArgs("gateway", "")...)
}

// Down stops every process, newest first, each with SIGTERM and a grace
// period, then the control plane.
func (s *Stack) Down() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		if err := s.procs[i].Stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	s.procs = nil
	if s.Kube != nil {
		errs = append(errs, s.Kube.Stop())
	}
	if s.host != nil {
		errs = append(errs, s.host.close())
		s.host = nil
	}
	return errors.Join(errs...)
}

// subscriberTLS names the certificate subscribers serve agents with.
const subscriberTLS = "subscriber-agents"

// SubscriberHost is a name the subscribers' certificate covers besides
// their addresses, for agents that reach them by name (through a proxy
// that resolves it).
const SubscriberHost = "subscriber.tether.test"

// operator is the certificate name of the stack itself, and of tests, when
// they call agent-registry as the platform operator would through a
// gateway.
const operator = "tether-dev"

func (s *Stack) pkiDir() string              { return filepath.Join(s.opts.StateDir, "pki") }
func (s *Stack) certFile(name string) string { return filepath.Join(s.pkiDir(), name+".crt") }
func (s *Stack) keyFile(name string) string  { return filepath.Join(s.pkiDir(), name+".key") }

// internalArgs are a service's flags for internal hops: its certificate
// for mTLS, and NATS as natsUser (none for the gateway, which does not use
// NATS).
func (s *Stack) internalArgs(service, natsUser string) []string {
	args := []string{"--mtls-cert", s.certFile(service), "--mtls-key", s.keyFile(service), "--mtls-ca", s.CAFile}
	if natsUser != "" {
		args = append(args, s.NATSArgs(natsUser)...)
	}
	return args
}

// Metric reads one series, such as name or name{label="v"}, from a
// service's /metrics; found is false without it, or when the service does
// not answer within two seconds (a frozen one).
func (s *Stack) Metric(service, series string) (v float64, found bool) {
	return MetricAt("http://"+s.Admin[service]+"/metrics", series)
}

// MetricAt is Metric for any admin endpoint's URL, such as a container's.
func MetricAt(url, series string) (v float64, found bool) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0, false
	}
	v, err = strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}
