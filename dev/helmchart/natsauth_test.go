package helmchart

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/dev/proc"
)

// authNamespace is where the pods whose tokens log in to NATS live.
const authNamespace = "tether-nats-auth"

// eachPodItsOwnUser runs nats-auth, the binary, as the chart does, against
// the node at url and the package's kube-apiserver, and logs in as the
// chart's pods do: a router pod with its projected token is a user of its
// own and reads only its own inbox; a token of another pod, of another
// audience, of an account without a role, or none, gets nobody in; the
// password services log in with their passwords, and not without.
func eachPodItsOwnUser(t *testing.T, f *fixture, url, caFile string, s natsAuthSecrets) {
	k := controlPlane(t, f)
	dir := t.TempDir()
	files := map[string]string{
		"roles.json": f.natsAuthRoles(t, authNamespace), "issuer.nk": s.issuerSeed, "password": s.passwords["nats-auth"],
	}
	for name, h := range s.hashes {
		files[name+".bcrypt"] = h
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "nats-auth")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./services/nats-auth/cmd/nats-auth")
	build.Dir = f.root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building nats-auth: %v\n%s", err, out)
	}
	ports, err := proc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	admin := "127.0.0.1:" + strconv.Itoa(ports[0])
	cmd := exec.Command(bin, "--admin-addr", admin, "--nats-url", url, "--nats-user", "nats-auth",
		"--nats-password-file", filepath.Join(dir, "password"), "--nats-ca-file", caFile,
		"--issuer-seed-file", filepath.Join(dir, "issuer.nk"), "--roles", filepath.Join(dir, "roles.json"),
		"--kubeconfig", k.kubeconfig, "--log-format", "text")
	logs, err := os.Create(filepath.Join(dir, "nats-auth.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("nats-auth's log:\n%s", b)
		}
	})
	waitReady(t, "http://"+admin+"/readyz")

	// The chart's accounts, and one that has no role; pods bound to them.
	k.must(t, "", "create", "namespace", authNamespace)
	for _, sa := range []string{release + "-router", release + "-subscriber", "default-app"} {
		k.must(t, "", "create", "serviceaccount", sa, "-n", authNamespace)
	}
	pods := map[string]string{"tether-router-7d9f-a1": release + "-router", "tether-router-7d9f-b2": release + "-router",
		"tether-subscriber-5c-c3": release + "-subscriber", "app-d4": "default-app"}
	for pod, sa := range pods {
		k.must(t, fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"namespace":%q},
"spec":{"serviceAccountName":%q,"automountServiceAccountToken":false,"containers":[{"name":"c","image":"scratch"}]}}`, pod, authNamespace, sa),
			"apply", "-f", "-")
	}
	token := func(pod, audience string) string {
		uid, _ := k.must(t, "", "get", "pod", pod, "-n", authNamespace, "-o", "jsonpath={.metadata.uid}")
		out, _ := k.must(t, "", "create", "token", pods[pod], "-n", authNamespace, "--audience", audience,
			"--bound-object-kind", "Pod", "--bound-object-name", pod, "--bound-object-uid", uid)
		return strings.TrimSpace(out)
	}
	connect := func(user, password string) (*nats.Conn, error) {
		return nats.Connect(url, nats.RootCAs(caFile), nats.UserInfo(user, password), nats.CustomInboxPrefix("_INBOX_"+user),
			nats.Timeout(10*time.Second))
	}

	// A router pod is a user of its own: its inbox, not another's.
	a := "tether-router-7d9f-a1"
	tokA := token(a, "tether-nats")
	start := time.Now()
	nc, err := connect(a, tokA)
	if err != nil {
		t.Fatalf("router pod %s with its token: %v", a, err)
	}
	// For ADR 013: a first login costs a TokenReview; a second within a
	// minute, none.
	first := time.Since(start)
	start = time.Now()
	again, err := connect(a, tokA)
	if err != nil {
		t.Fatalf("router pod %s again: %v", a, err)
	}
	again.Close()
	t.Logf("a router pod's login over TLS through nats-auth: %v the first time, %v with the review remembered", first, time.Since(start))
	defer nc.Close()
	allowed(t, nc, "tether.rtr."+a+".x-1.1", "")
	refused(t, nc, "tether.rtr.tether-router-7d9f-b2.x-1.1", "")
	refused(t, nc, "tether.req.dev", "")
	// A subscriber pod takes requests in the queue group only.
	sub := "tether-subscriber-5c-c3"
	snc, err := connect(sub, token(sub, "tether-nats"))
	if err != nil {
		t.Fatalf("subscriber pod %s with its token: %v", sub, err)
	}
	defer snc.Close()
	allowed(t, snc, "tether.req.dev", "subscribers")
	refused(t, snc, "tether.req.dev", "")

	for _, tc := range []struct{ name, user, password string }{
		{"pod a's token as pod b", "tether-router-7d9f-b2", token(a, "tether-nats")},
		{"a token for the kube-apiserver", a, token(a, "https://kubernetes.default.svc")},
		{"an account without a role", "app-d4", token("app-d4", "tether-nats")},
		{"a forged token", a, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eDp5In0.c2ln"},
		{"a password service with a wrong password", "agent-registry", "guess"},
		{"no password", "agent-registry", ""},
		{"the issuer's seed as a password", "nats-auth", s.issuerSeed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if nc, err := connect(tc.user, tc.password); err == nil {
				nc.Close()
				t.Fatal("logged in")
			} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Fatalf("got %v, want an authorization violation", err)
			}
		})
	}
	// A password service, as before.
	start = time.Now()
	reg, err := connect("agent-registry", s.passwords["agent-registry"])
	if err != nil {
		t.Fatalf("agent-registry with its password: %v", err)
	}
	t.Logf("agent-registry's login with its password (bcrypt cost 10) through nats-auth: %v", time.Since(start))
	defer reg.Close()
	allowed(t, reg, "_INBOX_agent-registry.x", "")
	refused(t, reg, "tether.rtr."+a+".x-1.1", "")
}

func allowed(t *testing.T, nc *nats.Conn, subj, queue string) {
	t.Helper()
	if err := trySubscribe(nc, subj, queue); err != nil {
		t.Fatalf("%s subscribing to %q %s: %v", nc.Opts.User, subj, queue, err)
	}
}

func refused(t *testing.T, nc *nats.Conn, subj, queue string) {
	t.Helper()
	if err := trySubscribe(nc, subj, queue); err == nil || !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
		t.Fatalf("%s subscribing to %q %s: %v, want a permissions violation", nc.Opts.User, subj, queue, err)
	}
}

// trySubscribe subscribes and reports the server's refusal, which comes
// asynchronously.
func trySubscribe(nc *nats.Conn, subj, queue string) error {
	errs := make(chan error, 1)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		// The server names the subject it refused.
		if strings.Contains(err.Error(), `"`+subj+`"`) {
			select {
			case errs <- err:
			default:
			}
		}
	})
	sub, err := nc.QueueSubscribeSync(subj, queue)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}
	select {
	case err := <-errs:
		return err
	case <-time.After(300 * time.Millisecond):
		return nil
	}
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		resp, err := httpGet(ctx, url)
		if err == nil && resp == 200 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not ready within 30s (%v, %d)", url, err, resp)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func httpGet(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
