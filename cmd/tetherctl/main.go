// Command tetherctl is Tether's command line:
//
//	tetherctl login --issuer URL --client-id ID [--login-hint USER]   # kubectl exec credential plugin
//	tetherctl cluster create NAME --tenant T                          # prints the agent's install manifest
//	tetherctl cluster token NAME                                      # the manifest again, with a new bootstrap token
//	tetherctl cluster ensure NAME --tenant T --bootstrap-token-file F [--wait 3m]  # for automation: create, or a new token
//	tetherctl cluster list
//	tetherctl cluster delete NAME
//	tetherctl cluster kubeconfig NAME [--address path|host]           # a kubeconfig for NAME as the current user
//
// The cluster commands talk to a gateway as the current kubeconfig's user
// (or --server, --token, --ca-file): creating and deleting take a platform
// administrator; listing shows the clusters of the caller's tenants.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tether-dev/tether/cmd/tetherctl/internal/clusters"
	"github.com/tether-dev/tether/cmd/tetherctl/internal/login"
)

const usage = `usage:
  tetherctl login --issuer URL --client-id ID [--login-hint USER] [flags]
  tetherctl cluster create NAME --tenant TENANT [flags]
  tetherctl cluster token NAME [flags]
  tetherctl cluster ensure NAME --tenant TENANT --bootstrap-token-file FILE [flags]
  tetherctl cluster list [flags]
  tetherctl cluster delete NAME [flags]
  tetherctl cluster kubeconfig NAME [--address path|host] [--cluster-domain DOMAIN] [flags]
Run a command with -h for its flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "login":
		err = runLogin(ctx, os.Args[2:])
	case "cluster":
		err = runCluster(ctx, os.Args[2:])
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tetherctl %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func runLogin(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("login", flag.ContinueOnError)
	var o login.Options
	var scopes, browser string
	fs.StringVar(&o.Issuer, "issuer", "", "OpenID Connect issuer URL")
	fs.StringVar(&o.ClientID, "client-id", "", "client id registered with the issuer")
	fs.StringVar(&o.LoginHint, "login-hint", "", "user to log in as, passed to the issuer")
	fs.StringVar(&o.CAFile, "ca-file", "", "CA trusted for the issuer besides the system roots")
	fs.StringVar(&scopes, "scopes", "openid,email,profile,groups,offline_access", "scopes to ask for, comma-separated")
	fs.StringVar(&o.CacheDir, "cache-dir", defaultCacheDir(), "where tokens are cached")
	fs.StringVar(&browser, "browser", defaultBrowser(), "command that opens the login URL (the URL is its last argument); empty: print the URL only")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:0", "loopback address for the issuer's redirect")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long to wait for the login")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Scopes = strings.Split(scopes, ",")
	o.Log = os.Stderr
	if browser != "" {
		cmdline := strings.Fields(browser)
		o.Browser = func(ctx context.Context, url string) error {
			cmd := exec.CommandContext(ctx, cmdline[0], append(cmdline[1:], url)...)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr // stdout is for the credential alone
			return cmd.Run()
		}
	}
	cred, err := login.Token(ctx, o)
	if err != nil {
		return err
	}
	out, err := login.ExecCredential(execAPIVersion(), cred)
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", out)
	return err
}

// execAPIVersion answers in the version client-go asked for.
func execAPIVersion() string {
	var info struct {
		APIVersion string `json:"apiVersion"`
	}
	if s := os.Getenv("KUBERNETES_EXEC_INFO"); s != "" && json.Unmarshal([]byte(s), &info) == nil {
		return info.APIVersion
	}
	return ""
}

func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "tether", "tokens")
}

func defaultBrowser() string {
	for _, b := range []string{"xdg-open", "open"} {
		if _, err := exec.LookPath(b); err == nil {
			return b
		}
	}
	return ""
}

func runCluster(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("create, token, ensure, list, delete or kubeconfig?")
	}
	verb, args := args[0], args[1:]
	fs := flag.NewFlagSet("cluster "+verb, flag.ContinueOnError)
	var conn connection
	conn.register(fs)
	tenant := fs.String("tenant", "", "tenant that owns the cluster (create)")
	agent := clusters.DefaultAgentOptions()
	fs.StringVar(&agent.Image, "agent-image", agent.Image, "agent image in the install manifest")
	fs.StringVar(&agent.HTTPSProxy, "https-proxy", "", "HTTP proxy (http://HOST:PORT) the agent reaches the subscribers through, when it is the cluster's only way out")
	fs.StringVar(&agent.NoProxy, "no-proxy", "", "more hosts, domains or CIDRs the agent reaches without the proxy, comma-separated (the cluster's kube-apiserver always is)")
	caFile := fs.String("subscriber-ca", "", "PEM file of the CA of the subscribers' certificate, when it is not a public one: shipped in the manifest as a ConfigMap")
	fs.StringVar(&agent.FrontProxySecret, "front-proxy-secret", "", "a kubernetes.io/tls Secret in tether-system with a client certificate from the cluster's front-proxy CA (its --requestheader-client-ca-file, a name in --requestheader-allowed-names): the agent names users in the kube-apiserver's --requestheader-* headers instead of impersonating them, and needs no right to impersonate")
	fs.StringVar(&agent.CPURequest, "agent-cpu-request", agent.CPURequest, "the agent's CPU request")
	fs.StringVar(&agent.MemoryRequest, "agent-memory-request", agent.MemoryRequest, "the agent's memory request")
	fs.StringVar(&agent.MemoryLimit, "agent-memory-limit", agent.MemoryLimit, "the agent's memory limit")
	tokenFile := fs.String("bootstrap-token-file", "", "where ensure writes the bootstrap token (0600)")
	address := fs.String("address", "path", "how kubeconfig names the cluster: path (https://GW/clusters/NAME) or host (https://NAME.DOMAIN, for clients that drop the server's path, such as kubectl proxy)")
	domain := fs.String("cluster-domain", "", "the gateway's --cluster-domain, for --address host; default: from the kubeconfig's server")
	wait := fs.Duration("wait", 0, "ensure: keep trying this long while the gateway, or what is behind it, is not up yet")
	// NAME may come before the flags, as with kubectl.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
	}
	if verb == "kubeconfig" {
		return conn.writeKubeconfig(os.Stdout, name, *address, *domain)
	}
	if *caFile != "" {
		b, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("reading --subscriber-ca: %w", err)
		}
		agent.SubscriberCA = string(b)
	}
	c, err := conn.client()
	if err != nil {
		return err
	}
	needName := func() error {
		if name == "" {
			return fmt.Errorf("cluster %s needs a NAME", verb)
		}
		return nil
	}
	switch verb {
	case "create":
		if err := needName(); err != nil {
			return err
		}
		if *tenant == "" {
			return errors.New("--tenant is required")
		}
		return c.Create(ctx, os.Stdout, name, *tenant, agent)
	case "token":
		if err := needName(); err != nil {
			return err
		}
		return c.Token(ctx, os.Stdout, name, agent)
	case "ensure":
		if err := needName(); err != nil {
			return err
		}
		if *tenant == "" || *tokenFile == "" {
			return errors.New("--tenant and --bootstrap-token-file are required")
		}
		return clusters.Patiently(ctx, *wait, func(ctx context.Context) error { return c.Ensure(ctx, name, *tenant, *tokenFile) })
	case "delete":
		if err := needName(); err != nil {
			return err
		}
		if err := c.Delete(ctx, name); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "cluster %s deleted; its agent's credential is revoked\n", name)
		return nil
	case "list":
		return c.List(ctx, os.Stdout)
	}
	return fmt.Errorf("unknown verb %q: create, token, ensure, list, delete or kubeconfig", verb)
}

// connection is how to reach the gateway: flags, or the kubeconfig's
// current context.
type connection struct {
	server, token, tokenFile, caFile, kubeconfig string
}

func (c *connection) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "", "gateway URL (https://HOST); default: from the kubeconfig")
	fs.StringVar(&c.token, "token", "", "bearer token; default: from the kubeconfig (token or exec plugin)")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the bearer token")
	fs.StringVar(&c.caFile, "ca-file", "", "CA of the gateway; default: from the kubeconfig")
	fs.StringVar(&c.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig whose current context points at a Tether gateway")
}

// kubeconfigPath is --kubeconfig, $KUBECONFIG or ~/.kube/config.
func (c *connection) kubeconfigPath() string {
	if c.kubeconfig != "" {
		return c.kubeconfig
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".kube", "config")
}

func (c *connection) client() (*clusters.Client, error) {
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, err
		}
		c.token = strings.TrimSpace(string(b))
	}
	var kc kubeUser
	if c.server == "" || c.token == "" {
		var err error
		if kc, err = readKubeconfig(c.kubeconfigPath()); err != nil {
			return nil, err
		}
	}
	server := c.server
	if server == "" {
		server = gatewayBase(kc.server)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	ca := kc.caPEM
	if c.caFile != "" {
		if ca, err = os.ReadFile(c.caFile); err != nil {
			return nil, err
		}
	}
	if len(ca) > 0 && !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("no certificate in the gateway CA")
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true,
	}}
	token := func(ctx context.Context) (string, error) {
		if c.token != "" {
			return c.token, nil
		}
		return kc.bearer(ctx)
	}
	return clusters.NewClient(server, hc, token)
}

// writeKubeconfig writes a kubeconfig for cluster name with the current
// kubeconfig's user and the gateway's CA; the gateway is not asked.
func (c *connection) writeKubeconfig(w io.Writer, name, address, domain string) error {
	if name == "" {
		return errors.New("cluster kubeconfig needs a NAME")
	}
	kc, err := readKubeconfig(c.kubeconfigPath())
	if err != nil {
		return err
	}
	base := c.server
	if base == "" {
		base = gatewayBase(kc.server)
		if domain == "" {
			domain = clusterDomain(kc.server)
		}
	}
	if domain == "" {
		domain = clusterDomain(base + "/clusters/")
	}
	if c.caFile != "" {
		if kc.caPEM, err = os.ReadFile(c.caFile); err != nil {
			return err
		}
	}
	if c.token != "" {
		kc.rawUser = map[string]any{"token": c.token}
	}
	server, err := clusterServer(base, name, address, domain)
	if err != nil {
		return err
	}
	return writeClusterKubeconfig(w, kc, name, server)
}

// gatewayBase turns a kubeconfig server (https://gw/clusters/dev) into the
// gateway's base URL.
func gatewayBase(server string) string {
	if i := strings.Index(server, "/clusters/"); i >= 0 {
		return server[:i]
	}
	return strings.TrimSuffix(server, "/")
}
