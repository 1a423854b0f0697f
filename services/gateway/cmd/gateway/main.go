// Command gateway is Tether's HTTPS edge: kubectl and the console talk to
// https://HOST/clusters/{id}/, or to https://{id}.DOMAIN/ with
// --cluster-domain, exactly as to a kube-apiserver.
//
//	gateway --listen :443 --tls-cert tls.crt --tls-key tls.key --router-url http://router:8082 \
//	  --oidc-issuer-url https://login.example.com --oidc-client-id tether [--tokens tokens.csv] \
//	  [--cluster-domain clusters.example.com]
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tether-dev/tether/lib/assertion"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/gateway/internal/gateway"
	"github.com/tether-dev/tether/services/gateway/internal/identity"
	"github.com/tether-dev/tether/services/router/launch"
)

func main() {
	var (
		common            svc.Common
		listen            string
		serving           svc.ServingCert
		tokensFile        string
		routerURL         string
		oidcCfg           identity.OIDCConfig
		oidcAlgs          string
		registryURL       string
		adminGroup        string
		mtls              svc.MTLS
		maxConns, perIP   int
		readHeaderTimeout time.Duration
		limits            gateway.Limits
		clusterDomains    string
		identityKey       string
		tokenSystemNames  string
		oidcSystem        string
		embedded          launch.Options
	)
	fs := flag.NewFlagSet("gateway", flag.ExitOnError)
	fs.StringVar(&identityKey, "identity-key", os.Getenv("TETHER_IDENTITY_KEY"), "PEM file of this gateway's identity signing key and its certificate by the identity root (tether-dev secrets makes one): agents impersonate only what it signs")
	fs.StringVar(&tokenSystemNames, "allow-system-names-in-tokens", "", "comma-separated Kubernetes system: users and groups (system:masters) the tokens file may name; any other refuses the file at start")
	common.Register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:8443", "HTTPS address for clients")
	serving.Register(fs, "clients")
	fs.StringVar(&tokensFile, "tokens", os.Getenv("TETHER_TOKENS_FILE"), `static tokens, CSV: token,user,uid,"groups","tenants"`)
	fs.StringVar(&oidcCfg.IssuerURL, "oidc-issuer-url", "", "OpenID Connect issuer whose ID tokens are accepted (https); empty: static tokens only")
	fs.StringVar(&oidcCfg.ClientID, "oidc-client-id", "", "audience ID tokens must be issued for")
	fs.StringVar(&oidcCfg.CAFile, "oidc-ca-file", "", "CA trusted for the issuer, in addition to the system roots")
	fs.StringVar(&oidcAlgs, "oidc-signing-algs", "RS256,ES256", "signature algorithms accepted, comma-separated (asymmetric only)")
	fs.StringVar(&oidcCfg.Claims.User, "oidc-username-claim", "sub", "claim naming the user")
	fs.StringVar(&oidcCfg.Claims.UserPrefix, "oidc-username-prefix", "", `prefix put before user names, e.g. "oidc:"`)
	fs.StringVar(&oidcCfg.Claims.Groups, "oidc-groups-claim", "groups", "claim listing the user's groups; empty: none")
	fs.StringVar(&oidcCfg.Claims.GroupsPrefix, "oidc-groups-prefix", "", "prefix put before group names")
	fs.StringVar(&oidcSystem, "oidc-allow-system-groups", "", "comma-separated Kubernetes system: groups (a break-glass group such as system:masters) an ID token may carry; any other system: name refuses the token")
	fs.StringVar(&oidcCfg.Claims.Tenants, "oidc-tenants-claim", "tenants", "claim listing the tenants whose clusters the user may reach")
	fs.StringVar(&registryURL, "registry-url", svc.EnvOr("TETHER_REGISTRY_URL", "http://127.0.0.1:8083"), "agent-registry base URL, for tetherctl's cluster commands")
	fs.StringVar(&adminGroup, "admin-group", "tether:admins", "group whose members may create and delete clusters")
	fs.StringVar(&routerURL, "router-url", svc.EnvOr("TETHER_ROUTER_URL", "http://127.0.0.1:8082"), "router base URL, or several, comma-separated: each request goes to the first that can be reached; \"embedded\": run the router in this process (it then needs --nats-* and takes --router-* flags), one hop less for a small installation")
	embedded.NATS.Register(fs)
	embedded.Register(fs, "router-")
	fs.DurationVar(&readHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has to send its request head")
	fs.IntVar(&limits.MaxHeaderBytes, "max-header-bytes", tunnel.MaxHead, fmt.Sprintf("largest request head accepted, at most %d (431 beyond, and beyond %d header fields or a field of %d bytes)", tunnel.MaxHead, tunnel.MaxHeaders, tunnel.MaxHeaderValue))
	fs.Int64Var(&limits.MaxBodyBytes, "max-body-bytes", 3<<20, "largest request body accepted, as the kube-apiserver's own limit (413 beyond); exec and port-forward streams are not bodies")
	fs.IntVar(&limits.InflightPerUser, "max-inflight-per-user", 400, "requests one user may have in progress (429 beyond); 0: no limit")
	fs.IntVar(&limits.InflightPerCluster, "max-inflight-per-cluster", 2000, "requests to one cluster in progress, all users together (429 beyond); 0: no limit")
	fs.IntVar(&limits.LongPerUser, "max-long-running-per-user", 200, "watches, logs -f, exec, attach and port-forward one user may hold open (429 beyond); 0: no limit")
	fs.IntVar(&maxConns, "max-connections", 20000, "client connections held at once (closed at accept beyond); 0: no limit")
	fs.IntVar(&perIP, "max-connections-per-ip", 0, "client connections from one IP address (a console's backend may hold many); 0: no limit")
	fs.IntVar(&limits.LongPerCluster, "max-long-running-per-cluster", 2000, "the same for one cluster, all users together; 0: no limit")
	fs.StringVar(&clusterDomains, "cluster-domain", "", "base domains, comma-separated, under which https://{id}.DOMAIN/ addresses cluster id (chosen by the Host header; the serving certificate must cover *.DOMAIN); empty: /clusters/{id}/ only")
	mtls.Register(fs, "")
	_ = fs.Parse(os.Args[1:])

	os.Exit(svc.Run("gateway", common, func(ctx context.Context, env *svc.Env) error {
		if !serving.Enabled() {
			return errors.New("--tls-cert and --tls-key are required")
		}
		tlsConfig, err := serving.Config()
		if err != nil {
			return fmt.Errorf("loading the serving certificate: %w", err)
		}
		var auth identity.Chain
		if tokensFile != "" {
			tokens, err := identity.LoadTokens(tokensFile, strings.Split(tokenSystemNames, ",")...)
			if err != nil {
				return err
			}
			auth = append(auth, tokens)
		}
		if oidcCfg.IssuerURL != "" {
			oidcCfg.SigningAlgs = strings.Split(oidcAlgs, ",")
			if oidcSystem != "" {
				oidcCfg.Claims.AllowSystem = strings.Split(oidcSystem, ",")
			}
			oidcCfg.Logger = env.Telemetry.Logger
			o, err := identity.NewOIDC(oidcCfg)
			if err != nil {
				return err
			}
			// Ready once the issuer was discovered; the gateway keeps
			// serving static tokens meanwhile.
			env.Admin.AddCheck("oidc", o.Ready)
			auth = append(auth, o)
		}
		if len(auth) == 0 {
			return errors.New("no way to authenticate: give --tokens, --oidc-issuer-url, or both")
		}
		// Calls to the router and the registry carry this gateway's
		// certificate (mTLS) when it has one.
		internal, err := mtls.Transport()
		if err != nil {
			return err
		}
		var routers []tetherv1connect.ProxyServiceClient
		var reachable []func(context.Context) error
		var router *launch.Router
		if routerURL == "embedded" {
			// The router's own code, on its own NATS connection; the
			// process is ready once NATS is and the clusters are read.
			embedded.ID = svc.InstanceID("")
			if router, err = launch.Start(ctx, env, embedded); err != nil {
				return err
			}
			client, stop := router.Client()
			defer stop()
			routers = append(routers, client)
		} else {
			for _, u := range strings.Split(routerURL, ",") {
				u = strings.TrimSuffix(strings.TrimSpace(u), "/")
				routers = append(routers, tetherv1connect.NewProxyServiceClient(&http.Client{Transport: internal}, u, tunnel.ClientOptions()))
				reachable = append(reachable, routerReachable(u, internal))
			}
		}
		var domains []string
		if clusterDomains != "" {
			domains = strings.Split(clusterDomains, ",")
		}
		hosts, err := gateway.NewClusterHosts(domains)
		if err != nil {
			return err
		}
		signer, err := assertion.LoadSigner(identityKey)
		if err != nil {
			return fmt.Errorf("--identity-key: %w", err)
		}
		if left := time.Until(signer.NotAfter()); left < 7*24*time.Hour {
			env.Log.Warn("the identity key's certificate ends soon: certify a new key", "not_after", signer.NotAfter(), "left", left.Round(time.Hour))
		}
		issuer, _ := os.Hostname()
		gw, err := gateway.New(gateway.Config{
			Identities:  signer,
			Issuer:      issuer,
			Auth:        auth,
			Routers:     routers,
			Limits:      limits,
			Hosts:       hosts,
			Instruments: env.Telemetry.Instruments(),
		})
		if err != nil {
			return err
		}
		// Ready while any router can be reached.
		env.Admin.AddCheck("router", func(ctx context.Context) error {
			var errs []error
			for _, check := range reachable {
				err := check(ctx)
				if err == nil {
					return nil
				}
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		})
		clusterAPI, err := gateway.NewClusterAPI(auth, tetherv1connect.NewClusterServiceClient(
			&http.Client{Transport: internal, Timeout: 30 * time.Second}, strings.TrimSuffix(registryURL, "/")), adminGroup, env.Telemetry.Logger)
		if err != nil {
			return err
		}
		// Not an http.ServeMux: it would redirect paths with dot segments
		// and double slashes, which the gateway refuses with a Status.
		apiPath, api := clusterAPI.Handler()
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// On every host, a cluster's too: no Kubernetes path starts
			// so, and tetherctl then works from either kind of kubeconfig.
			if strings.HasPrefix(r.URL.Path, apiPath) {
				api.ServeHTTP(w, r)
				return
			}
			gw.ServeHTTP(w, r)
		})
		hs := &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: readHeaderTimeout,
			// The gateway answers a head over the limit with a Status; far
			// beyond it the server cuts the client off without reading on.
			MaxHeaderBytes: limits.ServerHeadBytes(),
			IdleTimeout:    5 * time.Minute,
			// No read or write timeout: watches and streams last hours.
			TLSConfig: tlsConfig,
			HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: svc.MaxStreamsPerConn, SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
		}
		err = env.Serve(ctx, svc.Listener{What: "clients", Addr: listen, Server: hs, TLS: true, Hijacked: gw.WaitUpgraded,
			Wrap: func(ln net.Listener) net.Listener { return gw.LimitConnections(ln, maxConns, perIP) }})
		if router != nil && err == nil {
			// The clients are served: what the router sent on NATS may
			// still be answered.
			err = router.Drain()
		}
		return err
	}))
}

// routerReachable is ready when a connection to the router opens: with
// mTLS, a whole handshake, which also proves the certificates fit (and
// leaves no half-open handshake in the router's log).
func routerReachable(routerURL string, t *http.Transport) func(context.Context) error {
	host := strings.TrimPrefix(strings.TrimPrefix(routerURL, "http://"), "https://")
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", host)
		if err != nil {
			return fmt.Errorf("router %s: %w", routerURL, err)
		}
		if strings.HasPrefix(routerURL, "https://") && t.TLSClientConfig != nil {
			cfg := t.TLSClientConfig.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(host)
			cfg.NextProtos = []string{"h2"}
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = c.Close()
				return fmt.Errorf("router %s: TLS: %w", routerURL, err)
			}
			return tc.Close()
		}
		return c.Close()
	}
}
