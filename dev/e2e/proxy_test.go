package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/dev/pki"
	"github.com/tether-dev/tether/dev/proc"
	"github.com/tether-dev/tether/dev/stack"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// An agent in a cluster whose only way out is a forward proxy (squid, with
// the subscribers' name known to it alone) enrolls, holds its streams over
// TLS through the proxy and serves kubectl; the proxy's own log shows the
// tunnels. Given a CA that did not sign the subscribers' certificate, or a
// name their certificate does not cover, an agent says which in its log and
// keeps trying.
func TestAgentThroughAProxy(t *testing.T) {
	const cluster = "e2e-proxied"
	fenced, err := stack.NewFenced()
	if err != nil {
		t.Fatal(err)
	}
	defer fenced.Close()
	// The kube-apiserver is the agent's own cluster's: reached directly
	// (NO_PROXY), as an in-cluster Service would be.
	apiserver := forward(t, fenced.HostIP(), strings.TrimPrefix(env.stack.Kube.URL, "https://"))
	dir := t.TempDir()
	proxy, err := stack.StartProxy(fenced.HostIP(), map[string]string{
		stack.SubscriberHost:    "127.0.0.1",
		"elsewhere.tether.test": "127.0.0.1", // the subscribers, under a name their certificate lacks
	})
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Stop()
	for _, a := range []string{apiserver, strings.TrimPrefix(proxy.URL, "http://")} {
		_, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		if err := fenced.Allow(p); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := kubeconfigVia(t, dir, apiserver)

	// The subscribers by a name only the proxy resolves.
	subscribers := func(host string) string {
		var urls []string
		for _, u := range env.stack.SubscriberURLs {
			parsed, _ := url.Parse(u)
			urls = append(urls, "https://"+net.JoinHostPort(host, parsed.Port()))
		}
		return strings.Join(urls, ",")
	}
	start := func(name, subscriberURL, ca, bootstrap string) (*proc.Process, string) {
		t.Helper()
		btFile := filepath.Join(dir, name+"-bootstrap")
		if err := os.WriteFile(btFile, []byte(bootstrap), 0o600); err != nil {
			t.Fatal(err)
		}
		ports, err := proc.FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		admin := net.JoinHostPort(fenced.IP(), strconv.Itoa(ports[0]))
		p, err := fenced.Start(name, env.stack.Bin("agent"), filepath.Join(dir, "logs"),
			[]string{"HTTPS_PROXY=" + proxy.URL, "NO_PROXY=" + fenced.HostIP()},
			append(env.stack.AgentIdentityArgs("acme"), "--cluster-id", cluster, "--subscriber-url", subscriberURL, "--subscriber-ca", ca,
				"--kubeconfig", kubeconfig, "--bootstrap-token-file", btFile, "--credential-file", filepath.Join(dir, name+"-credential"),
				"--admin-addr", admin, "--ping-interval=1s", "--ping-timeout=5s")...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Stop(10 * time.Second) })
		return p, admin
	}

	bootstrap := createCluster(t, cluster, "acme")
	t.Cleanup(func() {
		_, _ = env.stack.Clusters().DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: cluster}))
	})

	t.Run("refused with a reason", func(t *testing.T) {
		other, err := pki.NewCA(filepath.Join(dir, "other-ca"), "not-tether")
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name, url, ca, want string
		}{
			{"wrong-ca", subscribers(stack.SubscriberHost), other.CertPath, "give --subscriber-ca the CA that signed it"},
			{"wrong-name", subscribers("elsewhere.tether.test"), env.stack.CAFile, "elsewhere.tether.test" + `\": --subscriber-url must name a host the certificate covers`},
		} {
			p, admin := start("agent-"+tt.name, tt.url, tt.ca, bootstrap)
			// Said more than once: it keeps trying, with backoff.
			waitAgent(t, p, 30*time.Second, func() bool { return strings.Count(readFile(t, p.LogPath), tt.want) >= 2 })
			if ready(admin) {
				t.Fatalf("%s: agent ready without a stream it can trust", tt.name)
			}
			_ = p.Stop(10 * time.Second)
		}
	})

	// The refused agents never got as far as enrolling: the token is good.
	p, admin := start("agent-"+cluster, subscribers(stack.SubscriberHost), env.stack.CAFile, bootstrap)
	waitAgent(t, p, 60*time.Second, func() bool { return ready(admin) })
	kc, err := env.stack.KubeconfigFor("admin-proxied", token("admin"), cluster)
	if err != nil {
		t.Fatal(err)
	}
	waitAgent(t, p, 30*time.Second, func() bool {
		_, _, err := kubectl(t, kc, "", "get", "ns", "default")
		return err == nil
	})
	must(t, kc, "", "create", "configmap", "proxied", "-n", "default", "--from-literal=through=squid")
	t.Cleanup(func() {
		_, _, _ = kubectl(t, env.direct, "", "delete", "configmap", "proxied", "-n", "default", "--ignore-not-found")
	})
	if got := must(t, kc, "", "get", "configmap", "proxied", "-n", "default", "-o", "jsonpath={.data.through}"); got != "squid" {
		t.Fatalf("configmap through the proxied agent: %q", got)
	}
	// Seen by the kube-apiserver itself.
	must(t, env.direct, "", "get", "configmap", "proxied", "-n", "default")
	// Enrollment and every stream went through the proxy: squid logged
	// tunnels to the subscribers' name, and the fence let nothing else out.
	log := readFile(t, proxy.AccessLog)
	if !strings.Contains(log, "CONNECT "+stack.SubscriberHost+":") {
		t.Fatalf("squid logged no tunnel to %s:\n%s", stack.SubscriberHost, log)
	}
}

// forward listens on ip and passes each connection on to target: the path
// from an agent's pod to its cluster's kube-apiserver.
func forward(t *testing.T, ip, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String()
}

// kubeconfigVia is the stack's agent kubeconfig with the kube-apiserver
// reached at addr (its certificate checked for localhost).
func kubeconfigVia(t *testing.T, dir, addr string) string {
	t.Helper()
	b, err := os.ReadFile(env.stack.AgentKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	var kc map[string]any
	if err := json.Unmarshal(b, &kc); err != nil {
		t.Fatalf("the stack's agent kubeconfig is not JSON: %v", err)
	}
	for _, c := range kc["clusters"].([]any) {
		cluster := c.(map[string]any)["cluster"].(map[string]any)
		cluster["server"] = "https://" + addr
		cluster["tls-server-name"] = "localhost"
	}
	out, _ := json.Marshal(kc)
	path := filepath.Join(dir, "agent-kubeconfig")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitAgent waits until ok, failing with the agent's last words if it
// exits or the time runs out.
func waitAgent(t *testing.T, p *proc.Process, limit time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s: not there within %v (exited: %v); its log:\n%s", p.Name, limit, p.Exited(), proc.Tail(p.LogPath, 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ready(admin string) bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}
