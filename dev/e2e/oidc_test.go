package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tether-dev/tether/dev/idp"
	"github.com/tether-dev/tether/dev/stack"
)

// kubectl logs in through `tetherctl login` (a client-go exec credential
// plugin) at the development identity provider; the cluster's RBAC sees
// the user and groups of the ID token.
func TestOIDCLoginThroughKubectl(t *testing.T) {
	cache := t.TempDir()
	ada, err := env.stack.OIDCKubeconfig("ada", cache)
	if err != nil {
		t.Fatal(err)
	}
	out := must(t, ada, "", "auth", "whoami", "-o", "json")
	var review selfSubjectReview
	if err := json.Unmarshal([]byte(out), &review); err != nil {
		t.Fatalf("whoami: %v\n%s", err, out)
	}
	if u := review.Status.UserInfo; u.Username != "ada@acme.example" || !contains(u.Groups, "acme:developers") {
		t.Fatalf("the cluster sees %+v", u)
	}
	// The token is cached, readable by its owner alone.
	files, _ := filepath.Glob(filepath.Join(cache, "*.json"))
	if len(files) != 1 {
		t.Fatalf("token cache: %v", files)
	}
	if fi, err := os.Stat(files[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token cache file: %v %v", fi, err)
	}
	// grace is of tenant globex: cluster dev does not exist for her.
	resp := call(t, "GET", "/clusters/dev/api", oidcToken(t, "grace", cache), nil, nil)
	defer resp.Body.Close()
	var st status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 404 || !strings.Contains(st.Message, `cluster "dev" not found`) {
		t.Fatalf("grace to acme's cluster: %d %+v %v", resp.StatusCode, st, err)
	}
}

// oidcToken runs `tetherctl login` as kubectl would and returns the token.
func oidcToken(t *testing.T, user, cache string) string {
	t.Helper()
	cmd := exec.Command(env.stack.Bin("tetherctl"), "login", "--issuer", env.stack.IssuerURL, "--client-id", stack.OIDCClientID,
		"--login-hint", user, "--ca-file", env.stack.CAFile, "--cache-dir", cache,
		"--browser", env.stack.Bin("devidp")+" approve --ca-file "+env.stack.CAFile)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tetherctl login: %v", err)
	}
	var cred struct {
		Kind   string `json:"kind"`
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &cred); err != nil || cred.Kind != "ExecCredential" || cred.Status.Token == "" {
		t.Fatalf("tetherctl login printed %q: %v", out, err)
	}
	return cred.Status.Token
}

// selfSubjectReview is who the cluster says the caller is.
type selfSubjectReview struct {
	Status struct {
		UserInfo struct {
			Username string   `json:"username"`
			Groups   []string `json:"groups"`
		} `json:"userInfo"`
	} `json:"status"`
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Tokens that are not the issuer's, for this audience, now, are refused
// with a 401 Status, and nothing reaches the cluster.
func TestForgedIDTokensAreRefused(t *testing.T) {
	// The provider's own keys, read from its folder: tokens signed right
	// but wrong in every other way.
	genuine, err := idp.New(idp.Config{Issuer: env.stack.IssuerURL, Users: stackIdPUsers(), Clients: []string{stack.OIDCClientID}, KeyDir: env.stack.IdPKeyDir})
	if err != nil {
		t.Fatal(err)
	}
	claims := func(edit func(map[string]any)) map[string]any {
		c, err := genuine.Claims("ada", stack.OIDCClientID, "")
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(c)
		}
		return c
	}
	sign := func(c map[string]any) string {
		tok, err := genuine.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	signOther := func(c map[string]any) string {
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: other}, (&jose.SignerOptions{}).WithType("JWT"))
		b, _ := json.Marshal(c)
		jws, _ := s.Sign(b)
		out, _ := jws.CompactSerialize()
		return out
	}
	unsigned := func(c map[string]any) string {
		b, _ := json.Marshal(c)
		return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString(b) + "."
	}
	good := sign(claims(nil))
	parts := strings.Split(good, ".")
	tests := map[string]string{
		"signed with another key": signOther(claims(nil)),
		"alg none":                unsigned(claims(nil)),
		"expired":                 sign(claims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() })),
		"for another audience":    sign(claims(func(c map[string]any) { c["aud"] = "kubernetes" })),
		"from another issuer":     sign(claims(func(c map[string]any) { c["iss"] = "https://login.example.com" })),
		// The development stack lets its break-glass group (system:masters)
		// through by name (TestBreakGlass); any other system: group is
		// refused at the gateway.
		"system:nodes claimed":     sign(claims(func(c map[string]any) { c["groups"] = []string{"system:nodes"} })),
		"tenant wildcard claimed":  sign(claims(func(c map[string]any) { c["tenants"] = []string{"*"} })),
		"claims of another header": parts[0] + "." + strings.Split(sign(claims(func(c map[string]any) { c["tenants"] = []string{"globex", "acme"} })), ".")[1] + "." + parts[2],
	}
	before := gauge(t, "agent", `tether_agent_requests_total{code="200"}`)
	footprint := measure(t)
	i := 0
	for name, tok := range tests {
		i++
		t.Run(name, func(t *testing.T) {
			// A write: if any forged token got through, the cluster would
			// keep its trace.
			body := strings.NewReader(fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"forged-%d"}}`, i))
			resp := call(t, "POST", "/clusters/dev/api/v1/namespaces/default/configmaps", tok, http.Header{"Content-Type": {"application/json"}}, body)
			defer resp.Body.Close()
			var st status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 401 || st.Reason != "Unauthorized" {
				t.Fatalf("got %d %+v (%v), want a 401 Status", resp.StatusCode, st, err)
			}
		})
	}
	if after := gauge(t, "agent", `tether_agent_requests_total{code="200"}`); after != before {
		t.Fatalf("the agent served %v requests during the forged tokens", after-before)
	}
	// Checked at the kube-apiserver itself, not through Tether.
	if out := must(t, env.direct, "", "get", "configmaps", "-n", "default", "-o", "name"); strings.Contains(out, "forged-") {
		t.Fatalf("a forged token created %s", out)
	}
	footprint.expectBack(t, "forged tokens")
	// The genuine token works, so the refusals above are about the forgery.
	resp := call(t, "GET", "/clusters/dev/version", good, nil, nil)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a genuine token: %d", resp.StatusCode)
	}
}

func stackIdPUsers() []idp.User { return stack.OIDCUsers() }

// The provider rotates its signing key (SIGHUP): the gateway follows the
// new key without a restart, and tokens of the old key keep working.
func TestIdPKeyRotation(t *testing.T) {
	if out := must(t, mustOIDC(t, "ada", t.TempDir()), "", "auth", "whoami"); !strings.Contains(out, "ada@acme.example") {
		t.Fatal(out)
	}
	if err := env.stack.Process("devidp").Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool {
		keys, _ := filepath.Glob(filepath.Join(env.stack.IdPKeyDir, "signing-*.key"))
		return len(keys) >= 2
	})
	// A fresh login gets a token of the new key; the gateway may wait out
	// its key-refresh interval once.
	kc := mustOIDC(t, "ada", t.TempDir())
	waitFor(t, 30*time.Second, func() bool {
		out, _, err := kubectl(t, kc, "", "auth", "whoami")
		return err == nil && strings.Contains(out, "ada@acme.example")
	})
}

func mustOIDC(t *testing.T, user, cache string) string {
	t.Helper()
	kc, err := env.stack.OIDCKubeconfig(user, cache)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// tetherctl cluster creates, lists and deletes clusters through the
// gateway: administrators only for changes, everyone sees only their
// tenants' clusters, and the manifest it prints is valid for a real
// kube-apiserver.
func TestTetherctlCluster(t *testing.T) {
	admin := kubeconfig(t, "admin")
	tetherctl := func(kc string, args ...string) (string, string, error) {
		cmd := exec.Command(env.stack.Bin("tetherctl"), append(args, "--kubeconfig", kc)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	manifest, errs, err := tetherctl(admin, "cluster", "create", "e2e-ctl", "--tenant", "globex")
	if err != nil {
		t.Fatalf("create: %v %s", err, errs)
	}
	t.Cleanup(func() { _, _, _ = tetherctl(admin, "cluster", "delete", "e2e-ctl") })
	if !strings.Contains(manifest, "--cluster-id=e2e-ctl") || !strings.Contains(manifest, "tbt1.") || !strings.Contains(manifest, env.stack.SubscriberURL) {
		t.Fatalf("manifest:\n%s", manifest)
	}
	must(t, env.direct, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: tether-system\n", "apply", "-f", "-")
	must(t, env.direct, manifest, "apply", "--dry-run=server", "-f", "-")

	list, errs, err := tetherctl(admin, "cluster", "list")
	if err != nil || !strings.Contains(list, "e2e-ctl") || !strings.Contains(list, "dev") {
		t.Fatalf("admin's list: %v %s\n%s", err, errs, list)
	}
	// ada (OIDC, tenant acme) sees acme's clusters only and may not create.
	ada := mustOIDC(t, "ada", t.TempDir())
	list, errs, err = tetherctl(ada, "cluster", "list")
	if err != nil || strings.Contains(list, "e2e-ctl") || !strings.Contains(list, "dev ") {
		t.Fatalf("ada's list: %v %s\n%s", err, errs, list)
	}
	if _, errs, err := tetherctl(ada, "cluster", "create", "ada-cluster", "--tenant", "acme"); err == nil || !strings.Contains(errs, "permission_denied") {
		t.Fatalf("ada created a cluster: %v %s", err, errs)
	}
	if _, errs, err := tetherctl(ada, "cluster", "delete", "dev"); err == nil || !strings.Contains(errs, "permission_denied") {
		t.Fatalf("ada deleted dev: %v %s", err, errs)
	}
	// ops (OIDC, tether:admins) may.
	ops := mustOIDC(t, "ops", t.TempDir())
	if _, errs, err := tetherctl(ops, "cluster", "delete", "e2e-ctl"); err != nil {
		t.Fatalf("ops deleting: %v %s", err, errs)
	}
	if list, _, _ := tetherctl(admin, "cluster", "list"); strings.Contains(list, "e2e-ctl") {
		t.Fatalf("deleted cluster still listed:\n%s", list)
	}
	// A token none of this (wrong, or not a token at all).
	if _, errs, err := tetherctl(admin, "cluster", "list", "--token", "forged"); err == nil || !strings.Contains(errs, "unauthenticated") {
		t.Fatalf("a forged token listed clusters: %v %s", err, errs)
	}
}

// A user in 300 groups (a 12 KB token; GKE's Connect gateway stops at
// 8 KB of headers) reaches the cluster with every group, as impersonation
// headers the agent writes.
func TestThreeHundredGroups(t *testing.T) {
	genuine, err := idp.New(idp.Config{Issuer: env.stack.IssuerURL, Users: stackIdPUsers(), Clients: []string{stack.OIDCClientID}, KeyDir: env.stack.IdPKeyDir})
	if err != nil {
		t.Fatal(err)
	}
	c, err := genuine.Claims("ada", stack.OIDCClientID, "")
	if err != nil {
		t.Fatal(err)
	}
	groups := make([]string, 300)
	for i := range groups {
		groups[i] = fmt.Sprintf("acme:team-with-a-long-name-%03d", i)
	}
	c["groups"] = groups
	tok, err := genuine.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.NewReader(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	resp := call(t, "POST", "/clusters/dev/apis/authentication.k8s.io/v1/selfsubjectreviews", tok, http.Header{"Content-Type": {"application/json"}}, body)
	defer resp.Body.Close()
	var review selfSubjectReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || resp.StatusCode != 201 {
		t.Fatalf("%d %v (token of %d bytes)", resp.StatusCode, err, len(tok))
	}
	got := review.Status.UserInfo
	for _, g := range groups {
		if !contains(got.Groups, g) {
			t.Fatalf("the cluster sees %s in %d groups, missing %s", got.Username, len(got.Groups), g)
		}
	}
	t.Logf("token %d bytes; the cluster sees %s in %d groups", len(tok), got.Username, len(got.Groups))
}
