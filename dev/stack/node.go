package stack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tether-dev/tether/dev/kubelet"
	"github.com/tether-dev/tether/dev/proc"
)

// NodeName is the development node's name: pods that set it as their
// spec.nodeName run on this machine as host processes.
const NodeName = "tether-dev-node"

// startNode starts the development node (dev/kubelet) against the stack's
// own control plane, and waits until its Node is Ready.
func (s *Stack) startNode(ctx context.Context) error {
	pkiDir := filepath.Join(s.opts.StateDir, "pki")
	cert, key, err := s.ca.IssueServer(pkiDir, "devnode", []string{"127.0.0.1"})
	if err != nil {
		return err
	}
	ports, err := proc.FreePorts(1)
	if err != nil {
		return err
	}
	started := time.Now()
	p, err := s.start(ctx, "devnode", "--kubeconfig", s.Kube.AdminKubeconfig, "--name", NodeName, "--listen", addr(ports[0]),
		"--tls-cert", cert, "--tls-key", key, "--client-ca", s.Kube.CAFile, "--state-dir", filepath.Join(s.opts.StateDir, "node"),
		"--pod-cidr", kubelet.RandomPodCIDR().String(), "--stand-in", s.Bin("podtool"))
	if err != nil {
		return err
	}
	if err := s.waitNode(ctx, p, started); err != nil {
		return err
	}
	s.NodeName = NodeName
	fmt.Fprintf(s.opts.Log, "stack: development node %s ready\n", NodeName)
	return nil
}

// waitNode waits until the Node is Ready by a heartbeat of p, which
// started at started: a Node left Ready by a node that was stopped a
// moment ago says nothing about p.
func (s *Stack) waitNode(ctx context.Context, p *proc.Process, started time.Time) error {
	caPEM, err := os.ReadFile(s.Kube.CAFile)
	if err != nil {
		return fmt.Errorf("stack: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	// Heartbeats are kept to the second.
	since := started.Truncate(time.Second)
	return poll(ctx, p, time.Minute, func() bool { return nodeReady(ctx, client, s.Kube.URL, s.Kube.AdminToken, since) })
}

func nodeReady(ctx context.Context, client *http.Client, base, token string, since time.Time) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/nodes/"+NodeName, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var node struct {
		Status struct {
			Conditions []struct {
				Type, Status      string
				LastHeartbeatTime time.Time
			}
		}
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&node) != nil {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True" && !c.LastHeartbeatTime.Before(since)
		}
	}
	return false
}
