package helmchart

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tether-dev/tether/dev/pki"
	"github.com/tether-dev/tether/dev/proc"
	"github.com/tether-dev/tether/dev/stack"
)

// The nats.conf the chart writes is one that nats-server (the version the
// chart's image tag names, which the dev module embeds) accepts; its users
// are the development stack's, with the same permissions; and a node
// serves the health endpoints the probes call, to clients over TLS. The
// nodes get only the passwords' bcrypt hashes, and a service logs in with
// its password.
func TestNATSConfig(t *testing.T) {
	f := newFixture(t)
	passwords := stack.NewNATSPasswords(stack.NATSUsers(nil))
	hashes, err := stack.NATSHashes(passwords)
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range hashes {
		t.Setenv("NATS_PASSWORD_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_")), h)
	}
	t.Setenv("POD_NAME", "tether-nats-0")
	want := devStackUsers(t, hashes)
	natsReadsOnlyHashes(t, f)

	for _, nodes := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d nodes", nodes), func(t *testing.T) {
			dir := t.TempDir()
			ports, err := proc.FreePorts(3)
			if err != nil {
				t.Fatal(err)
			}
			path, caFile := natsConfig(t, f, dir, nodes, ports)
			opts, err := server.ProcessConfigFile(path)
			if err != nil {
				t.Fatalf("nats-server refuses the chart's configuration: %v", err)
			}
			checkUsers(t, opts.Users, want)
			if opts.ServerName != "tether-nats-0" || opts.LameDuckDuration != 30*time.Second || opts.LameDuckGracePeriod != 10*time.Second ||
				opts.JetStreamMaxStore != 8<<30 || opts.JetStreamMaxMemory != 256<<20 || opts.MaxPayload != 1<<20 ||
				opts.PingInterval != 2*time.Second || opts.MaxPingsOut != 2 || opts.TLSConfig == nil || !opts.JetStream {
				t.Errorf("options: name %q, lame duck %v/%v, JetStream %v %d/%d, payload %d, ping %v×%d, TLS %v",
					opts.ServerName, opts.LameDuckDuration, opts.LameDuckGracePeriod, opts.JetStream, opts.JetStreamMaxStore,
					opts.JetStreamMaxMemory, opts.MaxPayload, opts.PingInterval, opts.MaxPingsOut, opts.TLSConfig != nil)
			}
			if nodes > 1 {
				if len(opts.Routes) != nodes || opts.Cluster.TLSConfig == nil || opts.Cluster.TLSConfig.ClientAuth.String() != "RequireAndVerifyClientCert" {
					t.Fatalf("cluster: %d routes, TLS %+v; want %d routes in mutual TLS", len(opts.Routes), opts.Cluster.TLSConfig, nodes)
				}
				return
			}
			serve(t, opts, ports, caFile, passwords["router"])
		})
	}
}

// natsReadsOnlyHashes checks that the NATS nodes take nothing but bcrypt
// hashes from Secrets: the passwords stay with the services.
func natsReadsOnlyHashes(t *testing.T, f *fixture) {
	t.Helper()
	objs, err := Objects(f.render(t, "", "--show-only", "templates/nats.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, o := range objs {
		if o["kind"] == "StatefulSet" {
			if err := json.NewEncoder(&b).Encode(o); err != nil {
				t.Fatal(err)
			}
		}
	}
	var set struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Env []struct {
							Name      string
							ValueFrom struct{ SecretKeyRef *struct{ Key string } }
						}
					}
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(b.String()), &set); err != nil || len(set.Spec.Template.Spec.Containers) == 0 {
		t.Fatalf("no NATS StatefulSet: %v", err)
	}
	n := 0
	for _, c := range set.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if ref := e.ValueFrom.SecretKeyRef; ref != nil {
				n++
				if !strings.HasSuffix(ref.Key, ".bcrypt") {
					t.Errorf("the NATS nodes read %s from key %s of a Secret, not a bcrypt hash", e.Name, ref.Key)
				}
			}
		}
	}
	if n == 0 {
		t.Error("the NATS nodes read no password hashes")
	}
}

// natsConfig renders the chart's nats.conf for nodes, with its paths and
// ports moved into dir and onto loopback, and writes the certificates it
// names. It returns the file and the CA.
func natsConfig(t *testing.T, f *fixture, dir string, nodes int, ports []int) (path, caFile string) {
	t.Helper()
	objs, err := Objects(f.render(t, "", "--show-only", "templates/nats-config.yaml", "--set", "nats.replicas="+strconv.Itoa(nodes)))
	if err != nil || len(objs) != 1 {
		t.Fatalf("rendering nats-config.yaml: %d objects, %v", len(objs), err)
	}
	conf, _ := objs[0]["data"].(map[string]any)["nats.conf"].(string)
	if conf == "" {
		t.Fatal("no nats.conf in the ConfigMap")
	}
	tlsDir := filepath.Join(dir, "tls")
	ca, err := pki.NewCA(filepath.Join(dir, "pki"), "ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueService(filepath.Join(dir, "pki"), "nats", []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{ca.CertPath: "ca.crt", cert: "tls.crt", key: "tls.key"} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tlsDir, to), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range [][2]string{
		{"/etc/nats/tls/", tlsDir + "/"},
		{"store_dir: /data", "store_dir: " + filepath.Join(dir, "data")},
		{"/var/run/nats/", dir + "/"},
		{"listen: 0.0.0.0:4222", "listen: 127.0.0.1:" + strconv.Itoa(ports[0])},
		{"http: 0.0.0.0:8222", "http: 127.0.0.1:" + strconv.Itoa(ports[1])},
		{"listen: 0.0.0.0:6222", "listen: 127.0.0.1:" + strconv.Itoa(ports[2])},
	} {
		if !strings.Contains(conf, r[0]) && (r[0] != "listen: 0.0.0.0:6222" || nodes > 1) {
			t.Fatalf("nats.conf has no %q:\n%s", r[0], conf)
		}
		conf = strings.ReplaceAll(conf, r[0], r[1])
	}
	path = filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, filepath.Join(tlsDir, "ca.crt")
}

type natsUser struct {
	User, Password     string
	Publish, Subscribe []string
	Responses          bool
}

func devStackUsers(t *testing.T, hashes map[string]string) map[string]natsUser {
	t.Helper()
	b, err := stack.NATSAuth(hashes)
	if err != nil {
		t.Fatal(err)
	}
	var auth struct{ Users []natsUser }
	if err := json.Unmarshal(b, &auth); err != nil {
		t.Fatal(err)
	}
	out := map[string]natsUser{}
	for _, u := range auth.Users {
		out[u.User] = u
	}
	return out
}

func checkUsers(t *testing.T, got []*server.User, want map[string]natsUser) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d NATS users, want %d (the development stack's)", len(got), len(want))
	}
	allowOrNothing := func(allow []string) *server.SubjectPermission {
		if len(allow) == 0 {
			return &server.SubjectPermission{Deny: []string{">"}}
		}
		return &server.SubjectPermission{Allow: allow}
	}
	same := func(a, b *server.SubjectPermission) bool {
		return a != nil && b != nil && slices.Equal(slices.Sorted(slices.Values(a.Allow)), slices.Sorted(slices.Values(b.Allow))) &&
			slices.Equal(a.Deny, b.Deny)
	}
	for _, u := range got {
		w, ok := want[u.Username]
		switch {
		case !ok:
			t.Errorf("user %s is not one of the development stack's", u.Username)
		case u.Password != w.Password:
			t.Errorf("user %s: the password is not the hash from its environment variable", u.Username)
		case !strings.HasPrefix(u.Password, "$2a$"):
			t.Errorf("user %s: the configuration holds a password, not its bcrypt hash", u.Username)
		case u.Permissions == nil:
			t.Errorf("user %s has no permissions: it may do anything", u.Username)
		case !same(u.Permissions.Publish, allowOrNothing(w.Publish)):
			t.Errorf("user %s may publish %+v, want %v", u.Username, u.Permissions.Publish, w.Publish)
		case !same(u.Permissions.Subscribe, allowOrNothing(w.Subscribe)):
			t.Errorf("user %s may subscribe %+v, want %v", u.Username, u.Permissions.Subscribe, w.Subscribe)
		case (u.Permissions.Response != nil) != w.Responses:
			t.Errorf("user %s: answers requests %v, want %v", u.Username, u.Permissions.Response != nil, w.Responses)
		}
	}
}

// serve starts the node and checks what the probes and the services use.
func serve(t *testing.T, opts *server.Options, ports []int, caFile, routerPassword string) {
	t.Helper()
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(20 * time.Second) {
		t.Fatal("the node was not ready within 20s")
	}
	monitor := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	for _, probe := range []string{"/healthz", "/healthz?js-enabled-only=true", "/healthz?js-server-only=true"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := http.Get(monitor + probe)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("probe %s: %v %v", probe, resp, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	url := "nats://localhost:" + strconv.Itoa(ports[0])
	if _, err := nats.Connect(url, nats.UserInfo("router", routerPassword)); err == nil {
		t.Fatal("a client without TLS connected")
	}
	nc, err := nats.Connect(url, nats.RootCAs(caFile), nats.UserInfo("router", routerPassword))
	if err != nil {
		t.Fatalf("the router's user over TLS: %v", err)
	}
	defer nc.Close()
	// The router may subscribe to its inbox, not to requests.
	if _, err := nc.SubscribeSync("tether.req.c1"); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := nc.LastError(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
		t.Fatalf("the router's subscription to requests: %v, want a permissions violation", err)
	}
}
