package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/tether-dev/tether/dev/proc"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/gen/tether/v1/tetherv1connect"
	"github.com/tether-dev/tether/lib/tunnel"
)

// Lifetimes the e2e stack's agent-registry runs with (main_test.go), short
// so expiry can be watched.
const (
	e2eBootstrapTTL  = 10 * time.Second
	e2eCredentialTTL = 20 * time.Second
)

// fakeAgent is a test's own agent: it speaks the tunnel protocol to the
// subscriber with whatever credential and frames a test gives it.
type fakeAgent struct {
	stream *connect.BidiStreamForClient[tetherv1.Frame, tetherv1.Frame]
	cancel context.CancelFunc
}

func (a *fakeAgent) close() { a.cancel(); _ = a.stream.CloseRequest(); _ = a.stream.CloseResponse() }

// agentsClient is the one HTTP/2 client of the fake agents, TLS as an
// agent's: one connection to the subscriber, closed after the test, so
// what the subscriber holds afterwards is its own.
var agentsClient = &http.Client{} // its transport is set once the stack is up

func agentClient() *http.Client { return agentsClient }

// dialAgent connects with credential (none if empty), says Hello for
// cluster and waits for Welcome: the error is the subscriber's answer.
func dialAgent(t *testing.T, credential, cluster string) (*fakeAgent, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream := tetherv1connect.NewTunnelServiceClient(agentClient(), env.stack.SubscriberURL, tunnel.ClientOptions()).Connect(ctx)
	if credential != "" {
		stream.RequestHeader().Set("Authorization", "Bearer "+credential)
	}
	a := &fakeAgent{stream: stream, cancel: cancel}
	if err := stream.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Hello{Hello: &tetherv1.Hello{ClusterId: cluster, AgentVersion: "fake"}}}); err != nil && !errors.Is(err, io.EOF) {
		a.close()
		return nil, err
	}
	timer := time.AfterFunc(10*time.Second, cancel)
	defer timer.Stop()
	f, err := stream.Receive()
	if err != nil {
		a.close()
		return nil, err
	}
	if f.GetWelcome() == nil {
		a.close()
		return nil, errors.New("no welcome")
	}
	return a, nil
}

// ended reports whether the subscriber ends the stream within limit.
func (a *fakeAgent) ended(limit time.Duration) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := a.stream.Receive(); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
		return true
	case <-time.After(limit):
		return false
	}
}

func enrollment() tetherv1connect.EnrollmentServiceClient {
	return tetherv1connect.NewEnrollmentServiceClient(agentClient(), env.stack.SubscriberURL)
}

func createCluster(t *testing.T, id, tenant string) string {
	t.Helper()
	resp, err := env.stack.Clusters().CreateCluster(context.Background(), connect.NewRequest(&tetherv1.CreateClusterRequest{Id: id, Tenant: tenant}))
	if err != nil {
		t.Fatalf("creating cluster %s: %v", id, err)
	}
	return resp.Msg.GetBootstrap().GetToken()
}

func enroll(cluster, bootstrap string) (string, error) {
	resp, err := enrollment().Enroll(context.Background(), connect.NewRequest(&tetherv1.EnrollRequest{ClusterId: cluster, BootstrapToken: bootstrap}))
	if err != nil {
		return "", err
	}
	return resp.Msg.GetCredential().GetToken(), nil
}

func wantCode(t *testing.T, what string, err error, code connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != code {
		t.Fatalf("%s: %v; want %v", what, err, code)
	}
}

// devStillServed: whatever an attacker did, the real cluster still answers
// through its own agent.
func devStillServed(t *testing.T) {
	t.Helper()
	if out, errOut, err := kubectl(t, adminKubeconfig(t), "", "get", "ns", "default", "-o", "name"); err != nil || strings.TrimSpace(out) != "namespace/default" {
		t.Fatalf("cluster dev through Tether: %v %s %s", err, out, errOut)
	}
}

func adminKubeconfig(t *testing.T) string {
	t.Helper()
	kc, err := env.stack.Kubeconfig("admin")
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// An agent gets a credential only for a valid, unused bootstrap token,
// connects only with a valid credential, serves only the cluster it names,
// and loses its stream when the cluster is deleted or the credential runs
// out. A hostile agent breaks only its own stream.
func TestAgentCredentials(t *testing.T) {
	// The first test of the package: a request through every hop first,
	// so the connections every later request reuses (gateway to router,
	// router to NATS) are in the baseline, not counted as what hostile
	// agents left behind.
	devStillServed(t)
	before := measure(t)
	// globex's cluster "intruder": its agent is the attacker.
	bootstrap := createCluster(t, "intruder", "globex")
	cred, err := enroll("intruder", bootstrap)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("replayed bootstrap token", func(t *testing.T) {
		_, err := enroll("intruder", bootstrap)
		wantCode(t, "enrolling twice", err, connect.CodeUnauthenticated)
	})
	t.Run("bootstrap token for another cluster", func(t *testing.T) {
		other := createCluster(t, "intruder-b", "globex")
		_, err := enroll("dev", other)
		wantCode(t, "enrolling dev with intruder-b's token", err, connect.CodeUnauthenticated)
	})
	t.Run("no or forged credential", func(t *testing.T) {
		flipped := []byte(cred)
		flipped[len(flipped)-3] ^= 1
		for name, c := range map[string]string{
			"none": "", "garbage": "garbage", "wrong format": "tac1.0011223344556677.e30.AAAA",
			"bit flipped": string(flipped), "oversized": cred + strings.Repeat("A", 4096),
		} {
			_, err := dialAgent(t, c, "intruder")
			wantCode(t, name, err, connect.CodeUnauthenticated)
		}
	})
	t.Run("claims another cluster", func(t *testing.T) {
		for _, victim := range []string{"dev", "intruder-b", "no-agent", "*", "dev.x"} {
			_, err := dialAgent(t, cred, victim)
			wantCode(t, "claiming "+victim, err, connect.CodePermissionDenied)
		}
		devStillServed(t)
	})
	t.Run("serves its own cluster to its own tenant only", func(t *testing.T) {
		a, err := dialAgent(t, cred, "intruder")
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		go func() {
			for {
				f, err := a.stream.Receive()
				if err != nil {
					return
				}
				if f.GetOpen() != nil {
					_ = a.stream.Send(&tetherv1.Frame{StreamId: f.StreamId, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{
						Status: 200, End: true, Body: []byte(`{"gitVersion":"v0-intruder"}`),
						Headers: []*tetherv1.Header{{Name: "Content-Type", Values: []string{"application/json"}}}}}})
				}
			}
		}()
		// The shared client: its connections are closed before the
		// footprint check counts the gateway's goroutines.
		client := gatewayClient(t)
		get := func(user string) (int, string) {
			req, _ := http.NewRequest(http.MethodGet, env.stack.GatewayURL+"/clusters/intruder/version", nil)
			req.Header.Set("Authorization", "Bearer "+token(user))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := get("mallory"); code != 200 || !strings.Contains(body, "v0-intruder") {
			t.Fatalf("mallory (globex) to her cluster: %d %s", code, body)
		}
		if code, body := get("admin"); code != 404 {
			t.Fatalf("admin (acme) to globex's cluster: %d %s", code, body)
		}
	})
	t.Run("renewal naming another cluster on the stream", func(t *testing.T) {
		other, err := enroll("intruder-b", createBootstrap(t, "intruder-b"))
		if err != nil {
			t.Fatal(err)
		}
		a, err := dialAgent(t, cred, "intruder")
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		if err := a.stream.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Credential{Credential: &tetherv1.Credential{Token: other}}}); err != nil {
			t.Fatal(err)
		}
		if !a.ended(10 * time.Second) {
			t.Fatal("the stream outlived a renewal for another cluster")
		}
	})
	t.Run("hostile frames drop only that stream", func(t *testing.T) {
		frames := map[string]*tetherv1.Frame{
			"hello again":            {Kind: &tetherv1.Frame_Hello{Hello: &tetherv1.Hello{ClusterId: "dev"}}},
			"welcome from the agent": {Kind: &tetherv1.Frame_Welcome{Welcome: &tetherv1.Welcome{}}},
			"ping on a request":      {StreamId: 7, Kind: &tetherv1.Frame_Ping{Ping: &tetherv1.Ping{}}},
			"empty frame":            {},
			"credential too long":    {Kind: &tetherv1.Frame_Credential{Credential: &tetherv1.Credential{Token: strings.Repeat("x", 2000)}}},
			"garbage credential":     {Kind: &tetherv1.Frame_Credential{Credential: &tetherv1.Credential{Token: "tac1.x"}}},
		}
		for name, f := range frames {
			a, err := dialAgent(t, cred, "intruder")
			if err != nil {
				t.Fatal(err)
			}
			_ = a.stream.Send(f)
			if !a.ended(10 * time.Second) {
				t.Errorf("%s: the stream went on", name)
			}
			a.close()
		}
		// Out of order or oversized on one request: that request is reset,
		// the stream goes on.
		a, err := dialAgent(t, cred, "intruder")
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		for _, f := range []*tetherv1.Frame{
			{StreamId: 99, Kind: &tetherv1.Frame_Response{Response: &tetherv1.Response{Status: 200, End: true}}},
			{StreamId: 98, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: bytes.Repeat([]byte("x"), tunnel.MaxChunk+1)}}},
			{StreamId: 97, Kind: &tetherv1.Frame_Window{Window: &tetherv1.Window{Increment: 0}}},
		} {
			if err := a.stream.Send(f); err != nil {
				t.Fatalf("sending %v: %v", f.Kind, err)
			}
		}
		resets := 0
		for resets < 2 {
			f, err := a.stream.Receive()
			if err != nil {
				t.Fatalf("the stream ended after request-level errors: %v", err)
			}
			if f.GetReset_() != nil {
				resets++
			}
		}
		// Not a frame at all: bytes that are no Connect envelope.
		req, _ := http.NewRequest(http.MethodPost, env.stack.SubscriberURL+tetherv1connect.TunnelServiceConnectProcedure, bytes.NewReader([]byte("\xff\xff\xff\xff\xffgarbage")))
		req.Header.Set("Content-Type", "application/connect+proto")
		req.Header.Set("Authorization", "Bearer "+cred)
		if resp, err := agentClient().Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		devStillServed(t)
	})
	t.Run("deleting the cluster cuts its agent off", func(t *testing.T) {
		a, err := dialAgent(t, cred, "intruder")
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		if _, err := env.stack.Clusters().DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: "intruder"})); err != nil {
			t.Fatal(err)
		}
		if !a.ended(5 * time.Second) {
			t.Fatal("the deleted cluster's stream is still open after 5 s")
		}
		_, err = dialAgent(t, cred, "intruder")
		wantCode(t, "connecting with a revoked credential", err, connect.CodeUnauthenticated)
		_, err = enrollment().Renew(context.Background(), connect.NewRequest(&tetherv1.RenewRequest{Credential: cred}))
		wantCode(t, "renewing a revoked credential", err, connect.CodeUnauthenticated)
		// Created again under the same name: the old credential is still
		// nothing.
		createCluster(t, "intruder", "globex")
		_, err = dialAgent(t, cred, "intruder")
		wantCode(t, "the old credential for the new cluster of that name", err, connect.CodeUnauthenticated)
	})
	t.Run("expiry", func(t *testing.T) {
		// A credential not renewed ends its stream; meanwhile a bootstrap
		// token nobody used runs out.
		late := createCluster(t, "lapse", "globex")
		c, err := enroll("intruder-b", createBootstrap(t, "intruder-b"))
		if err != nil {
			t.Fatal(err)
		}
		a, err := dialAgent(t, c, "intruder-b")
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		// Pings keep the stream alive; only the credential can end it.
		go func() {
			for {
				if a.stream.Send(&tetherv1.Frame{Kind: &tetherv1.Frame_Ping{Ping: &tetherv1.Ping{}}}) != nil {
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		}()
		if !a.ended(e2eCredentialTTL + 5*time.Second) {
			t.Fatal("the stream outlived its credential")
		}
		_, err = enroll("lapse", late)
		wantCode(t, "an expired bootstrap token", err, connect.CodeUnauthenticated)
	})
	for _, id := range []string{"intruder", "intruder-b", "lapse"} {
		_, _ = env.stack.Clusters().DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: id}))
	}
	devStillServed(t)
	agentsClient.CloseIdleConnections()
	before.expectBack(t, "hostile agents")
}

// createBootstrap gives an existing cluster a new bootstrap token.
func createBootstrap(t *testing.T, id string) string {
	t.Helper()
	resp, err := env.stack.Clusters().IssueBootstrapToken(context.Background(), connect.NewRequest(&tetherv1.IssueBootstrapTokenRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	return resp.Msg.GetBootstrap().GetToken()
}

// The stack's agent renews its credential (every 2/3 of 20 s here) on its
// open stream: no reconnect.
func TestAgentRenewsWithoutDroppingItsStream(t *testing.T) {
	connects := gauge(t, "agent", "tether_agent_connects_total")
	renewals := gauge(t, "agent", "tether_agent_credential_renewals_total")
	waitFor(t, e2eCredentialTTL, func() bool { return gauge(t, "agent", "tether_agent_credential_renewals_total") > renewals })
	if now := gauge(t, "agent", "tether_agent_connects_total"); now != connects {
		t.Fatalf("the agent reconnected (%v → %v connects) around a renewal", connects, now)
	}
	devStillServed(t)
}

// In a cluster the agent keeps its credential in a Secret: a restarted
// agent (a rescheduled pod) connects with it, its bootstrap token long
// used up.
func TestAgentKeepsItsCredentialInASecret(t *testing.T) {
	const cluster, secret = "e2e-secret", "tether-e2e-credential"
	bootstrap := createCluster(t, cluster, "acme")
	t.Cleanup(func() {
		_, _ = env.stack.Clusters().DeleteCluster(context.Background(), connect.NewRequest(&tetherv1.DeleteClusterRequest{Id: cluster}))
		_, _, _ = kubectl(t, env.direct, "", "delete", "secret", "-n", "default", secret, "--ignore-not-found")
	})
	dir := t.TempDir()
	btFile := filepath.Join(dir, "bootstrap-token")
	if err := os.WriteFile(btFile, []byte(bootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() *proc.Process {
		p, _ := startOwnAgent(t, "agent-"+cluster, true, "--cluster-id", cluster, "--subscriber-url", env.stack.SubscriberURL,
			"--bootstrap-token-file", btFile, "--credential-secret", "default/"+secret)
		return p
	}
	p := start()
	// The Secret is there, seen by the kube-apiserver itself.
	if out := must(t, env.direct, "", "get", "secret", "-n", "default", secret, "-o", "jsonpath={.data.credential}"); out == "" {
		t.Fatal("the credential Secret is empty")
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The bootstrap token is used up; the Secret is all the agent has.
	if err := os.WriteFile(btFile, []byte("tbt1.used-up"), 0o600); err != nil {
		t.Fatal(err)
	}
	p = start()
	defer func() { _ = p.Stop(10 * time.Second) }()
	// And it serves its cluster.
	resp := call(t, "GET", "/clusters/"+cluster+"/version", token("admin"), nil, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cluster %s through its restarted agent: %d", cluster, resp.StatusCode)
	}
}
