// Command agent runs inside a customer's cluster. It dials out to a Tether
// subscriber and serves the requests that arrive on that stream by calling
// the local kube-apiserver as the end user.
//
//	agent --cluster-id prod-eu-1 --subscriber-url https://tether.example:8443 [--kubeconfig FILE]
//
// Without --kubeconfig it uses the pod's in-cluster service account, which
// needs RBAC to impersonate users and groups.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tether-dev/tether/lib/svc"
	"github.com/tether-dev/tether/lib/tunnel"
	"github.com/tether-dev/tether/services/agent/internal/agent"
)

func main() {
	var (
		common     svc.Common
		clusterID  string
		subURL     string
		kubeconfig string
		window     int
		ka         tunnel.Keepalive
	)
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	common.Register(fs)
	fs.StringVar(&clusterID, "cluster-id", os.Getenv("TETHER_CLUSTER_ID"), "id of the cluster this agent serves")
	fs.StringVar(&subURL, "subscriber-url", os.Getenv("TETHER_SUBSCRIBER_URL"), "base URL of a subscriber")
	fs.StringVar(&kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig for the local kube-apiserver; empty: in-cluster config")
	fs.IntVar(&window, "window", tunnel.DefaultWindow, "receive window per request, in bytes")
	fs.DurationVar(&ka.Interval, "ping-interval", tunnel.DefaultKeepalive.Interval, "ping the subscriber after this long without traffic")
	fs.DurationVar(&ka.Timeout, "ping-timeout", tunnel.DefaultKeepalive.Timeout, "declare the subscriber dead after this long without traffic")
	_ = fs.Parse(os.Args[1:])

	os.Exit(svc.Run("agent", common, func(ctx context.Context, env *svc.Env) error {
		cfg, err := restConfig(kubeconfig)
		if err != nil {
			return err
		}
		// Pass the client's Accept-Encoding through instead of adding gzip
		// and unpacking it again here.
		cfg.DisableCompression = true
		rt, err := rest.TransportFor(cfg)
		if err != nil {
			return fmt.Errorf("building the kube-apiserver transport: %w", err)
		}
		upgrades, err := upgradeTransport(cfg)
		if err != nil {
			return err
		}
		a, err := agent.New(agent.Config{
			ClusterID:        clusterID,
			SubscriberURL:    subURL,
			Subscriber:       &http.Client{Transport: svc.H2CTransport()},
			APIServer:        cfg.Host,
			APITransport:     rt,
			UpgradeTransport: upgrades,
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
