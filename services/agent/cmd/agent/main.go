// Command agent runs inside a customer's cluster. It dials out to a Tether
// subscriber and serves the requests that arrive on that stream by calling
// the local kube-apiserver as the end user.
//
//	agent --cluster-id prod-eu-1 --subscriber-url https://tether.example:8443 \
//	  --bootstrap-token-file /etc/tether/bootstrap-token [--subscriber-ca ca.crt] \
//	  [--kubeconfig FILE] [--credential-file FILE]
//
// It reaches the subscribers over TLS (HTTP/2), through the proxy that
// HTTPS_PROXY names unless NO_PROXY exempts them, trusting the system's
// roots and --subscriber-ca.
//
// Without --kubeconfig it uses the pod's in-cluster service account, which
// needs RBAC to impersonate users and groups. On first start it exchanges
// the one-time bootstrap token for a credential bound to its cluster, keeps
// it in a Secret (in a cluster) or a file, and renews it before expiry.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	authorizationv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tether-dev/tether/lib/assertion"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/agent/internal/agent"
	"github.com/tether-dev/tether/services/agent/internal/dial"
)

func main() {
	var (
		common     svc.Common
		clusterID  string
		subURL     string
		kubeconfig string
		window     int
		ka         tunnel.Keepalive
		bootstrap  string
		credFile   string
		credSecret string
		streams    int
		remember   time.Duration
		caFile     string
		cleartext  bool
		rootKey    string
		tenant     string
		allowSys   string
		mode       string
		fpCert     string
		fpKey      string
		fp         agent.FrontProxy
	)
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	common.Register(fs)
	fs.StringVar(&clusterID, "cluster-id", os.Getenv("TETHER_CLUSTER_ID"), "id of the cluster this agent serves")
	fs.StringVar(&subURL, "subscriber-url", os.Getenv("TETHER_SUBSCRIBER_URL"), "base URL of the subscribers (a load balancer), or several, comma-separated: a stream told to move connects to the next")
	fs.StringVar(&kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig for the local kube-apiserver; empty: in-cluster config")
	fs.IntVar(&window, "window", tunnel.DefaultWindow, "receive window per request, in bytes")
	fs.IntVar(&streams, "streams", 2, "streams to hold, each to another subscriber where it can: requests spread across them, and losing one subscriber leaves the other serving")
	fs.DurationVar(&remember, "remember-mutations", 5*time.Minute, "how long the result of each mutation is kept, so a retry of it (a hop was lost) gets the first result instead of running twice")
	fs.DurationVar(&ka.Interval, "ping-interval", tunnel.DefaultKeepalive.Interval, "ping the subscriber after this long without traffic")
	fs.DurationVar(&ka.Timeout, "ping-timeout", tunnel.DefaultKeepalive.Timeout, "declare the subscriber dead after this long without traffic")
	fs.StringVar(&caFile, "subscriber-ca", os.Getenv("TETHER_SUBSCRIBER_CA"), "PEM file of CAs trusted for the subscribers' certificates, beside the system's roots")
	fs.BoolVar(&cleartext, "insecure-cleartext", false, "allow http:// subscriber URLs (HTTP/2 without TLS): for debugging on one machine only")
	fs.StringVar(&bootstrap, "bootstrap-token-file", os.Getenv("TETHER_BOOTSTRAP_TOKEN_FILE"), "file holding the one-time bootstrap token from `tetherctl cluster create`")
	fs.StringVar(&credFile, "credential-file", os.Getenv("TETHER_CREDENTIAL_FILE"), "file keeping the agent's credential (outside a cluster)")
	fs.StringVar(&credSecret, "credential-secret", os.Getenv("TETHER_CREDENTIAL_SECRET"), "NAMESPACE/NAME of the Secret keeping the credential; default in a cluster: the agent's namespace/tether-agent-credential")
	fs.StringVar(&rootKey, "identity-root-key", os.Getenv("TETHER_IDENTITY_ROOT_KEY"), "PEM file of the identity root's public key: the agent impersonates only identities signed, for each request, by a gateway key this root certified")
	fs.StringVar(&tenant, "tenant", os.Getenv("TETHER_TENANT"), "the tenant this cluster belongs to: only its users are served")
	fs.StringVar(&allowSys, "allow-system-names", os.Getenv("TETHER_ALLOW_SYSTEM_NAMES"), "comma-separated system: users and groups the agent may impersonate (a break-glass group); every other system: name, system:masters included, is refused")
	fs.StringVar(&mode, "identity-mode", "impersonate", "how the kube-apiserver learns whom a request runs as: impersonate (the agent's service account impersonates the user, each group and extra) or front-proxy (the kube-apiserver's --requestheader-* authentication: a client certificate and X-Remote-* headers, where the cluster's provider configures it)")
	fs.StringVar(&fpCert, "front-proxy-cert", "", "front-proxy mode: PEM client certificate signed by the kube-apiserver's --requestheader-client-ca-file, its name in --requestheader-allowed-names")
	fs.StringVar(&fpKey, "front-proxy-key", "", "front-proxy mode: the certificate's PEM key")
	fs.Func("front-proxy-user-header", "front-proxy mode: the kube-apiserver's --requestheader-username-headers, comma-separated, beside those it publishes in kube-system/extension-apiserver-authentication (default X-Remote-User)", headerList(&fp.UserHeaders))
	fs.Func("front-proxy-uid-header", "front-proxy mode: its --requestheader-uid-headers (default X-Remote-Uid)", headerList(&fp.UIDHeaders))
	fs.Func("front-proxy-group-header", "front-proxy mode: its --requestheader-group-headers (default X-Remote-Group)", headerList(&fp.GroupHeaders))
	fs.Func("front-proxy-extra-prefix", "front-proxy mode: its --requestheader-extra-headers-prefix (default X-Remote-Extra-)", headerList(&fp.ExtraPrefixes))
	_ = fs.Parse(os.Args[1:])

	os.Exit(svc.Run("agent", common, func(ctx context.Context, env *svc.Env) error {
		cfg, err := restConfig(kubeconfig)
		if err != nil {
			return err
		}
		// Pass the client's Accept-Encoding through instead of adding gzip
		// and unpacking it again here.
		cfg.DisableCompression = true
		own, err := rest.TransportFor(cfg)
		if err != nil {
			return fmt.Errorf("building the kube-apiserver transport: %w", err)
		}
		// Users' requests go with the agent's own credentials, which
		// impersonate them, or as a front proxy with its certificate.
		proxied, frontProxy, err := proxiedConfig(cfg, mode, fpCert, fpKey, fp)
		if err != nil {
			return err
		}
		if frontProxy != nil {
			// Every header the kube-apiserver takes a user from must be
			// dropped from clients' requests, not only the flags' names.
			published, err := agent.FrontProxyOf(ctx, own, cfg.Host)
			switch {
			case errors.Is(err, agent.ErrNoFrontProxy):
				return fmt.Errorf("--identity-mode=front-proxy: %w", err)
			case err != nil:
				env.Log.Warn("cannot read the kube-apiserver's front-proxy headers (bind the Role kube-system/extension-apiserver-authentication-reader); using the flags' alone", "err", err)
			default:
				merged := published.Merge(*frontProxy)
				frontProxy = &merged
			}
			env.Log.Info("naming users as a front proxy", "user_headers", frontProxy.UserHeaders, "group_headers", frontProxy.GroupHeaders,
				"uid_headers", frontProxy.UIDHeaders, "extra_prefixes", frontProxy.ExtraPrefixes)
		}
		rt := own
		if frontProxy != nil {
			if rt, err = rest.TransportFor(proxied); err != nil {
				return fmt.Errorf("building the front-proxy transport: %w", err)
			}
		}
		upgrades, err := upgradeTransport(proxied)
		if err != nil {
			return err
		}
		urls := strings.Split(subURL, ",")
		out, err := dial.Transport(dial.Config{URLs: urls, CAFile: caFile, InsecureCleartext: cleartext})
		if err != nil {
			return err
		}
		subscriber := &http.Client{Transport: out}
		store, err := credentialStore(cfg, kubeconfig, credFile, credSecret)
		if err != nil {
			return err
		}
		var enrollers []tetherv1connect.EnrollmentServiceClient
		for _, u := range urls {
			enrollers = append(enrollers, tetherv1connect.NewEnrollmentServiceClient(&http.Client{Transport: subscriber.Transport, Timeout: 30 * time.Second}, u))
		}
		enrollment, err := agent.NewEnrollment(enrollers...)
		if err != nil {
			return err
		}
		creds := &agent.Credentials{
			ClusterID: clusterID, Bootstrap: agent.BootstrapFile(bootstrap), Store: store, Log: env.Log,
			Enrollment: enrollment,
		}
		verifier, err := assertion.LoadVerifier(rootKey)
		if err != nil {
			return fmt.Errorf("--identity-root-key: %w", err)
		}
		var allowed []string
		for _, n := range strings.Split(allowSys, ",") {
			if n = strings.TrimSpace(n); n != "" {
				allowed = append(allowed, n)
			}
		}
		authz, err := authorizationv1client.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("building the SubjectAccessReview client: %w", err)
		}
		a, err := agent.New(agent.Config{
			Admission:        agent.Admission{Verifier: verifier, Tenant: tenant, AllowSystem: allowed},
			AccessReviews:    authz.SubjectAccessReviews(),
			ClusterID:        clusterID,
			SubscriberURLs:   urls,
			Subscriber:       subscriber,
			Credentials:      creds,
			APIServer:        cfg.Host,
			APITransport:     rt,
			SelfTransport:    own,
			FrontProxy:       frontProxy,
			UpgradeTransport: upgrades,
			Streams:          streams,
			RememberFor:      remember,
			Window:           window,
			Keepalive:        ka,
			Version:          svc.Version,
			Instruments:      env.Telemetry.Instruments(),
		})
		if err != nil {
			return err
		}
		env.Admin.AddCheck("stream", func(context.Context) error {
			if !a.Connected() {
				return errors.New("no stream to a subscriber")
			}
			return nil
		})
		return a.Run(ctx, env.ShutdownTimeout)
	}))
}

// credentialStore picks where the credential lives: a file if given, else
// a Secret (named, or the default one in the agent's namespace in a
// cluster).
func credentialStore(cfg *rest.Config, kubeconfig, file, secret string) (agent.CredentialStore, error) {
	if file != "" {
		return agent.FileStore{Path: file}, nil
	}
	if secret == "" {
		if kubeconfig != "" {
			return nil, errors.New("outside a cluster, --credential-file or --credential-secret is required")
		}
		ns, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
		if err != nil {
			return nil, fmt.Errorf("finding the agent's namespace: %w", err)
		}
		secret = strings.TrimSpace(string(ns)) + "/tether-agent-credential"
	}
	ns, name, ok := strings.Cut(secret, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("--credential-secret %q: want NAMESPACE/NAME", secret)
	}
	client, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the Secrets client: %w", err)
	}
	return agent.SecretStore{Secrets: client, Namespace: ns, Name: name}, nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.Timeout = 0 * time.Second // watches and streams are long; the caller's context bounds each request
	return cfg, nil
}

// proxiedConfig is how users' requests reach the kube-apiserver: with the
// agent's own credentials (impersonation), or with none but the front
// proxy's client certificate.
func proxiedConfig(cfg *rest.Config, mode, cert, key string, fp agent.FrontProxy) (*rest.Config, *agent.FrontProxy, error) {
	switch mode {
	case "impersonate":
		if cert != "" || key != "" || len(fp.UserHeaders)+len(fp.UIDHeaders)+len(fp.GroupHeaders)+len(fp.ExtraPrefixes) > 0 {
			return nil, nil, errors.New("the --front-proxy-* flags are for --identity-mode=front-proxy")
		}
		return cfg, nil, nil
	case "front-proxy":
		// The flags' names first, then the usual ones: both are dropped
		// from clients' requests.
		fp = fp.Merge(agent.DefaultFrontProxy())
		if cert == "" || key == "" {
			return nil, nil, errors.New("--identity-mode=front-proxy needs --front-proxy-cert and --front-proxy-key")
		}
		// Nothing of the agent's own identity: the kube-apiserver must
		// take the user from the headers, authenticated by the certificate.
		proxied := rest.AnonymousClientConfig(cfg)
		proxied.CertFile, proxied.KeyFile = cert, key
		proxied.DisableCompression = cfg.DisableCompression
		return proxied, &fp, nil
	}
	return nil, nil, fmt.Errorf("--identity-mode %q: impersonate or front-proxy", mode)
}

// headerList is a flag of comma-separated header names, added to *dst.
func headerList(dst *[]string) func(string) error {
	return func(v string) error {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				*dst = append(*dst, h)
			}
		}
		return nil
	}
}

// upgradeTransport dials the kube-apiserver for exec, attach and
// port-forward with the same credentials as every other request: client
// certificates in the TLS config, tokens from client-go's wrappers.
func upgradeTransport(cfg *rest.Config) (http.RoundTripper, error) {
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the kube-apiserver TLS config: %w", err)
	}
	rt, err := rest.HTTPWrappersForConfig(cfg, &agent.UpgradeTransport{TLS: tlsConfig, Dialer: net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}})
	if err != nil {
		return nil, fmt.Errorf("building the kube-apiserver upgrade transport: %w", err)
	}
	return rt, nil
}
