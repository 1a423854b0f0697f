// Command devnode is the development node: a small kubelet that runs the
// pods bound to it as host processes and serves exec, attach,
// port-forward and logs for them (package dev/kubelet). dev/stack starts
// it next to the kube-apiserver; never deploy it.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tether-dev/tether/dev/kubelet"
)

func main() {
	var (
		kubeconfig, name, listen, cert, key, clientCA, stateDir, podCIDR, standIn string
		idle, creation                                                            time.Duration
	)
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of a user that may manage nodes, leases and pods")
	flag.StringVar(&name, "name", "tether-dev-node", "name of the Node")
	flag.StringVar(&listen, "listen", "127.0.0.1:0", "address of the kubelet API (HTTPS)")
	flag.StringVar(&cert, "tls-cert", "", "serving certificate")
	flag.StringVar(&key, "tls-key", "", "serving key")
	flag.StringVar(&clientCA, "client-ca", "", "CA of the kube-apiserver's kubelet client certificate; empty: any client")
	flag.StringVar(&stateDir, "state-dir", "", "folder for pod working folders and container logs")
	flag.StringVar(&podCIDR, "pod-cidr", "127.0.100.0/24", "loopback range pod addresses come from")
	flag.StringVar(&standIn, "stand-in", "", "podtool, run in place of a container that names only an image (default: podtool next to this binary)")
	flag.DurationVar(&idle, "stream-idle-timeout", 4*time.Hour, "close exec, attach and port-forward sessions idle this long")
	flag.DurationVar(&creation, "stream-creation-timeout", 30*time.Second, "fail an exec, attach or port-forward whose client has not opened its streams within this")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "devnode")
	if standIn == "" {
		standIn = besideMe("podtool")
	}
	if err := run(log, kubeconfig, name, listen, cert, key, clientCA, stateDir, podCIDR, standIn, idle, creation); err != nil {
		log.Error("exiting on error", "err", err)
		os.Exit(1)
	}
}

// besideMe is the path of a program built into the same folder as this one.
func besideMe(program string) string {
	self, err := os.Executable()
	if err != nil {
		return program
	}
	return filepath.Join(filepath.Dir(self), program)
}

func run(log *slog.Logger, kubeconfig, name, listen, cert, key, clientCA, stateDir, podCIDR, standIn string, idle, creation time.Duration) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return fmt.Errorf("loading the serving certificate: %w", err)
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return fmt.Errorf("reading the client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", clientCA)
		}
		tlsConfig.ClientCAs, tlsConfig.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	prefix, err := netip.ParsePrefix(podCIDR)
	if err != nil {
		return fmt.Errorf("--pod-cidr: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	node, err := kubelet.New(kubelet.Config{
		Client: client, Name: name, Listener: ln, TLS: tlsConfig, StateDir: stateDir, PodCIDR: prefix,
		StreamIdleTimeout: idle, StreamCreationTimeout: creation, StandIn: standIn, Log: log,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("serving the kubelet API", "addr", "https://"+ln.Addr().String(), "node", name)
	return node.Run(ctx)
}
