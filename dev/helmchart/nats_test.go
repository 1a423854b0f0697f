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
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/tether-dev/tether/dev/chartsecrets"
	"github.com/tether-dev/tether/dev/pki"
	"github.com/tether-dev/tether/dev/proc"
	"github.com/tether-dev/tether/dev/stack"
)

// The nats.conf the chart writes is one that nats-server (the version the
// chart's image tag names, which the dev module embeds) accepts, with
// nats-auth as its auth callout; the roles nats-auth gets are the
// development stack's users, with the same permissions; and a node serves
// the health endpoints the probes call, to clients over TLS. The nodes get
// only nats-auth's bcrypt hash and its issuer's public key. Then, against a
// real kube-apiserver, nats-auth (the binary) gives each router pod a NATS
// user of its own (TestNATSAuthGivesEachPodItsOwnUser's checks).
func TestNATSConfig(t *testing.T) {
	f := newFixture(t)
	secrets := newNATSAuthSecrets(t)
	t.Setenv("NATS_PASSWORD_NATS_AUTH", secrets.hashes["nats-auth"])
	t.Setenv("NATS_AUTH_ISSUER", secrets.issuerPub)
	t.Setenv("POD_NAME", "tether-nats-0")
	natsReadsOnlyHashes(t, f)
	sameRolesAsTheDevStack(t, f.natsAuthRoles(t, namespace))

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
			checkCallout(t, opts, secrets)
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
			url := serve(t, opts, ports, caFile)
			if _, err := nats.Connect(url, nats.UserInfo("nats-auth", secrets.passwords["nats-auth"])); err == nil {
				t.Fatal("a client without TLS connected")
			}
			eachPodItsOwnUser(t, f, url, caFile, secrets)
		})
	}
}

// natsAuthSecrets are what tether-dev secrets puts in the nats-auth Secret.
type natsAuthSecrets struct {
	passwords, hashes     map[string]string
	issuerSeed, issuerPub string
}

func newNATSAuthSecrets(t *testing.T) natsAuthSecrets {
	t.Helper()
	var users []string
	for _, u := range stack.NATSUsers(nil) {
		if !slices.Contains(chartsecrets.TokenRoles, u) {
			users = append(users, u)
		}
	}
	passwords := stack.NewNATSPasswords(append(users, "nats-auth"))
	hashes, err := stack.NATSHashes(passwords)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := issuer.Seed()
	pub, _ := issuer.PublicKey()
	return natsAuthSecrets{passwords: passwords, hashes: hashes, issuerSeed: string(seed), issuerPub: pub}
}

// checkCallout checks that every client but nats-auth goes to the callout,
// and that nats-auth itself may only answer it.
func checkCallout(t *testing.T, opts *server.Options, s natsAuthSecrets) {
	t.Helper()
	if opts.AuthCallout == nil || opts.AuthCallout.Issuer != s.issuerPub || !slices.Equal(opts.AuthCallout.AuthUsers, []string{"nats-auth"}) {
		t.Fatalf("auth callout %+v: want issuer %s and auth user nats-auth", opts.AuthCallout, s.issuerPub)
	}
	if len(opts.Users) != 1 || opts.Users[0].Username != "nats-auth" {
		t.Fatalf("%d configured users, want nats-auth alone", len(opts.Users))
	}
	u := opts.Users[0]
	switch {
	case u.Password != s.hashes["nats-auth"] || !strings.HasPrefix(u.Password, "$2a$"):
		t.Errorf("nats-auth: the configuration holds %q, not the bcrypt hash from its environment variable", u.Password)
	case u.Permissions == nil || u.Permissions.Publish == nil || !slices.Equal(u.Permissions.Publish.Deny, []string{">"}) || len(u.Permissions.Publish.Allow) > 0:
		t.Errorf("nats-auth may publish %+v: it only answers", u.Permissions)
	case !slices.Equal(u.Permissions.Subscribe.Allow, []string{"$SYS.REQ.USER.AUTH tether-nats-auth", "_INBOX_nats-auth.>"}) || u.Permissions.Response == nil:
		t.Errorf("nats-auth may subscribe %+v", u.Permissions.Subscribe)
	}
}

// role is an entry of the roles.json the chart gives nats-auth.
type role struct {
	Name             string   `json:"name"`
	PasswordHashFile string   `json:"passwordHashFile"`
	ServiceAccount   string   `json:"serviceAccount"`
	Publish          []string `json:"publish"`
	Subscribe        []string `json:"subscribe"`
	Responses        bool     `json:"responses"`
}

// natsAuthRoles renders the chart for ns and returns nats-auth's roles.json.
func (f *fixture) natsAuthRoles(t *testing.T, ns string) string {
	t.Helper()
	out, err := f.helm.Run(t.Context(), "template", release, f.chart, "--namespace", ns, "--show-only", "templates/nats-auth.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o["kind"] == "ConfigMap" {
			if r, _ := o["data"].(map[string]any)["roles.json"].(string); r != "" {
				return r
			}
		}
	}
	t.Fatal("no roles.json in nats-auth's ConfigMap")
	return ""
}

// sameRolesAsTheDevStack checks the chart's roles against the
// development stack's users: the same permissions; routers and
// subscribers by their pods' tokens, the rest by password.
func sameRolesAsTheDevStack(t *testing.T, rolesJSON string) {
	t.Helper()
	var file struct{ Roles []role }
	if err := json.Unmarshal([]byte(rolesJSON), &file); err != nil {
		t.Fatal(err)
	}
	want := devStackUsers(t)
	if len(file.Roles) != len(want) {
		t.Errorf("%d roles, want %d (the development stack's users)", len(file.Roles), len(want))
	}
	own := func(subjects []string, name string) []string {
		out := make([]string, len(subjects))
		for i, s := range subjects {
			out[i] = strings.ReplaceAll(s, stack.UserToken, name)
		}
		return slices.Sorted(slices.Values(out))
	}
	for _, r := range file.Roles {
		w, ok := want[r.Name]
		token := slices.Contains(chartsecrets.TokenRoles, r.Name)
		switch {
		case !ok:
			t.Errorf("role %s is not one of the development stack's users", r.Name)
		case token && r.ServiceAccount != "system:serviceaccount:"+namespace+":"+release+"-"+r.Name, token && r.PasswordHashFile != "":
			t.Errorf("role %s logs in as %q, %q; want its pods' tokens", r.Name, r.ServiceAccount, r.PasswordHashFile)
		case !token && (r.ServiceAccount != "" || r.PasswordHashFile != r.Name+".bcrypt"):
			t.Errorf("role %s logs in as %q, %q; want its password", r.Name, r.ServiceAccount, r.PasswordHashFile)
		case !slices.Equal(own(r.Publish, r.Name), slices.Sorted(slices.Values(w.Publish))):
			t.Errorf("role %s may publish %v, want %v", r.Name, r.Publish, w.Publish)
		case !slices.Equal(own(r.Subscribe, r.Name), slices.Sorted(slices.Values(w.Subscribe))):
			t.Errorf("role %s may subscribe %v, want %v", r.Name, r.Subscribe, w.Subscribe)
		case r.Responses != w.Responses:
			t.Errorf("role %s: answers requests %v, want %v", r.Name, r.Responses, w.Responses)
		}
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
				if !strings.HasSuffix(ref.Key, ".bcrypt") && ref.Key != "issuer.pub" {
					t.Errorf("the NATS nodes read %s from key %s of a Secret, not a bcrypt hash nor the issuer's public key", e.Name, ref.Key)
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

// devStackUsers are the development stack's NATS users, one per service.
func devStackUsers(t *testing.T) map[string]natsUser {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte("unused"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	hashes := map[string]string{}
	for _, u := range stack.NATSUsers(nil) {
		hashes[u] = string(h)
	}
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

// serve starts the node, checks what the probes call, and returns the
// clients' URL.
func serve(t *testing.T, opts *server.Options, ports []int, caFile string) string {
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
	return "nats://localhost:" + strconv.Itoa(ports[0])
}
