package e2e

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/dev/pki"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/svc"
)

// No service trusts another for where it is on the network: the router
// and agent-registry answer only callers whose certificate the internal CA
// signed for a service allowed to call them, and NATS speaks only TLS.
func TestInternalHopsNeedCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(env.dir, "state", "pki"), "tether-dev-ca")
	if err != nil {
		t.Fatal(err)
	}
	// A subscriber's certificate, genuine, but not allowed to call a router.
	if _, _, err := ca.IssueService(dir, "subscriber", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	// A "gateway" certificate from a CA of the attacker's own.
	rogue, err := pki.NewCA(filepath.Join(dir, "rogue"), "rogue-ca")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rogue.IssueService(filepath.Join(dir, "rogue"), "gateway", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	router := routerURL(t)
	clients := map[string]http.RoundTripper{
		"no TLS":                     svc.H2CTransport(),
		"TLS without a certificate":  withTLS(t, "", ""),
		"a subscriber's certificate": withTLS(t, filepath.Join(dir, "subscriber.crt"), filepath.Join(dir, "subscriber.key")),
		"a rogue CA's gateway":       withTLS(t, filepath.Join(dir, "rogue", "gateway.crt"), filepath.Join(dir, "rogue", "gateway.key")),
	}
	for name, rt := range clients {
		t.Run("router, "+name, func(t *testing.T) {
			c := tetherv1connect.NewProxyServiceClient(&http.Client{Transport: rt, Timeout: 5 * time.Second}, router)
			stream, err := c.Call(context.Background(), connect.NewRequest(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Open{Open: &tetherv1.Open{
				RequestId: "forged", ClusterId: "dev", Method: "GET", Path: "/api/v1/namespaces/kube-system/secrets", End: true,
				Tenants: []string{"acme"}}}}))
			if err == nil {
				if stream.Receive() {
					t.Fatalf("the router answered a forged gateway: %v", stream.Msg())
				}
				err = stream.Err()
			}
			if err == nil {
				t.Fatal("no error")
			}
		})
		t.Run("registry, "+name, func(t *testing.T) {
			c := tetherv1connect.NewClusterServiceClient(&http.Client{Transport: rt, Timeout: 5 * time.Second}, env.stack.RegistryURL)
			// A cluster of its own, so a registry that wrongly obeys breaks
			// nothing else in the run.
			createCluster(t, "e2e-victim", "acme")
			defer func() {
				_, _ = env.stack.Clusters().DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: "e2e-victim"}))
			}()
			if _, err := c.DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: "e2e-victim"})); err == nil {
				t.Fatal("the registry deleted a cluster for this caller")
			}
			if _, err := c.ListClusters(context.Background(), connect.NewRequest(&tetherv1.ListClustersRequest{})); err == nil {
				t.Fatal("the registry listed clusters for this caller")
			}
		})
	}
	devStillServed(t)
	// NATS: a client that will not speak TLS gets nowhere.
	b, err := os.ReadFile(filepath.Join(env.dir, "state", "nats-users", "router-0"))
	if err != nil {
		t.Fatal(err)
	}
	pw := string(b)
	if nc, err := nats.Connect(env.stack.NATSURL, nats.Name(intruder), nats.UserInfo("router-0", pw), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("NATS accepted a client without TLS")
	}
}

func withTLS(t *testing.T, certFile, keyFile string) http.RoundTripper {
	t.Helper()
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // the attacker trusts anything
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tr.TLSClientConfig.Certificates = []tls.Certificate{c}
	}
	return tr
}

// routerURL is the router's address, from the flags the gateway got.
func routerURL(t *testing.T) string {
	t.Helper()
	args := env.stack.Args("gateway")
	for i, a := range args {
		if a == "--router-url" && i+1 < len(args) {
			return args[i+1]
		}
	}
	t.Fatal("the gateway has no --router-url")
	return ""
}
