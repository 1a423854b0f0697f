package kube

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real control plane; the first run builds Kubernetes")
	}
	ctx := t.Context()
	bin, err := EnsureBinaries(ctx, repoRoot(t), testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	alice := User{Name: "alice", UID: "alice-uid", Groups: []string{"tether:dev"}, Token: randomToken()}
	cp, err := Start(ctx, Config{BinDir: bin, Dir: t.TempDir(), Users: []User{alice}, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Stop() })

	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		kubectl = filepath.Join(bin, "kubectl")
	}
	cacheDir := t.TempDir() // keep kubectl's discovery cache out of $HOME
	run := func(kubeconfig string, args ...string) (stdout, stderr string, err error) {
		var o, e bytes.Buffer
		cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig=" + kubeconfig, "--cache-dir=" + cacheDir}, args...)...)
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}

	if out, errOut, err := run(cp.AdminKubeconfig, "create", "namespace", "tether-e2e"); err != nil {
		t.Fatalf("admin: kubectl create namespace: %v\n%s%s", err, out, errOut)
	}
	// The audit log has the creation, and none of the reads.
	events, err := cp.Audit()
	if err != nil {
		t.Fatal(err)
	}
	var created int
	for _, ev := range events {
		if ev.Verb == "get" || ev.Verb == "list" {
			t.Errorf("a read in the audit log: %+v", ev)
		}
		if ev.Verb == "create" && ev.ObjectRef != nil && ev.ObjectRef.Resource == "namespaces" && ev.ObjectRef.Name == "tether-e2e" &&
			ev.User.Username == "admin" && ev.ResponseStatus != nil && ev.ResponseStatus.Code == 201 && ev.Stage == "ResponseComplete" {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("the audit log holds the namespace's creation %d times, want once", created)
	}

	aliceConfig, err := cp.KubeconfigFor(alice)
	if err != nil {
		t.Fatal(err)
	}
	// alice authenticates but has no RBAC bindings.
	_, errOut, err := run(aliceConfig, "get", "pods", "--namespace=tether-e2e")
	if err == nil || !strings.Contains(errOut, "Forbidden") {
		t.Fatalf("alice: kubectl get pods: err=%v, want Forbidden in stderr:\n%s", err, errOut)
	}

	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := cp.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	for _, p := range cp.procs {
		// Each child leads its own process group; ESRCH on the group means
		// neither the child nor anything it forked is left.
		if err := syscall.Kill(-p.Pid(), 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still has processes after Stop: kill -0 returned %v", p.Name, p.Pid(), err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	bin := t.TempDir()
	for _, name := range binaries {
		if err := os.WriteFile(filepath.Join(bin, name), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ok := User{Name: "bob", Token: "t1"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"valid", Config{BinDir: bin, Dir: "x", Users: []User{ok}}, ""},
		{"no bin dir", Config{Dir: "x"}, "BinDir is empty"},
		{"missing binary", Config{BinDir: t.TempDir(), Dir: "x"}, "find etcd"},
		{"no dir", Config{BinDir: bin}, "Dir is empty"},
		{"reserved name", Config{BinDir: bin, Dir: "x", Users: []User{{Name: adminName, Token: "t"}}}, "reserved"},
		{"duplicate name", Config{BinDir: bin, Dir: "x", Users: []User{ok, {Name: "bob", Token: "t2"}}}, "already used"},
		{"duplicate token", Config{BinDir: bin, Dir: "x", Users: []User{ok, {Name: "carol", Token: "t1"}}}, "token already used"},
		{"empty token", Config{BinDir: bin, Dir: "x", Users: []User{{Name: "bob"}}}, "empty token"},
		{"slash in name", Config{BinDir: bin, Dir: "x", Users: []User{{Name: "a/b", Token: "t"}}}, "slash"},
		{"comma in group", Config{BinDir: bin, Dir: "x", Users: []User{{Name: "bob", Token: "t", Groups: []string{"a,b"}}}}, "invalid group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestStartRetriesPortConflict uses fake binaries: an etcd that always loses
// the port race must be retried once, then reported with its log.
func TestStartRetriesPortConflict(t *testing.T) {
	bin, dir := t.TempDir(), t.TempDir()
	runs := filepath.Join(dir, "runs")
	etcd := "#!/bin/sh\necho run >> " + runs + "\necho 'listen tcp 127.0.0.1:2379: bind: address already in use' >&2\nexit 1\n"
	for _, name := range binaries {
		script := "#!/bin/sh\nexit 1\n"
		if name == "etcd" {
			script = etcd
		}
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var log bytes.Buffer
	_, err := Start(t.Context(), Config{BinDir: bin, Dir: dir, Log: &log})
	if err == nil || !strings.Contains(err.Error(), "etcd exited early") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start error = %v, want etcd's exit with its log", err)
	}
	if got := strings.Count(log.String(), "retrying"); got != 1 {
		t.Errorf("log has %d retries, want 1:\n%s", got, log.String())
	}
	if b, _ := os.ReadFile(runs); strings.Count(string(b), "run") != 2 {
		t.Errorf("etcd ran %d times, want 2", strings.Count(string(b), "run"))
	}
}

func TestWriteTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.csv")
	err := writeTokenFile(path, []User{
		{Name: "admin", UID: "admin", Groups: []string{"system:masters"}, Token: "a"},
		{Name: "bob", UID: "b", Groups: []string{"g1", "g2"}, Token: "b"},
		{Name: "carol", UID: "c", Token: "c"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "a,admin,admin,system:masters\nb,bob,b,\"g1,g2\"\nc,carol,c\n"
	if string(got) != want {
		t.Fatalf("token file:\n%s\nwant:\n%s", got, want)
	}
}

// repoRoot is the folder holding go.work, above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the test folder")
		}
		dir = parent
	}
}

// testWriter sends progress lines to the test log, so they show with -v or
// on failure but do not interleave with other tests' output.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// The first make run once failed once the last binary was built: build.sh's
// progress heartbeat left a sleep holding the output pipe, and
// EnsureBinaries gave up waiting for it (exec: WaitDelay expired before I/O
// complete). The real script runs here with a go that takes long enough
// for a heartbeat, then builds nothing but stand-ins.
func TestEnsureBinariesAfterHeartbeat(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for build.sh's 30 s heartbeat")
	}
	fake := t.TempDir()
	goScript := `#!/bin/sh
out=
while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
case $out in */etcd.tmp) sleep 31 ;; esac
printf '#!/bin/sh\n' > "$out" && chmod +x "$out"
`
	if err := os.WriteFile(filepath.Join(fake, "go"), []byte(goScript), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("TETHER_CACHE", t.TempDir())
	t.Setenv("K8S_VERSION", "v0.0.0-heartbeat-test")
	var progress bytes.Buffer
	bin, err := EnsureBinaries(t.Context(), repoRoot(t), &progress)
	if err != nil {
		t.Fatalf("EnsureBinaries: %v\nprogress:\n%s", err, progress.String())
	}
	if !strings.Contains(progress.String(), "still building etcd") || !strings.Contains(progress.String(), "built etcd in") {
		t.Errorf("no heartbeat and per-step time in the progress:\n%s", progress.String())
	}
	if _, err := os.Stat(filepath.Join(bin, "kube-scheduler")); err != nil {
		t.Errorf("kube-scheduler not built: %v", err)
	}
}

// A script that succeeded is not failed for a process it left behind
// holding its output: EnsureBinaries waits WaitDelay, then ends it.
func TestEnsureBinariesLeftoverHoldsOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out EnsureBinaries' WaitDelay")
	}
	root, bin := t.TempDir(), t.TempDir()
	for _, name := range binaries {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "hack", "kube"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/usr/bin/env bash\nsleep 60 &\necho " + bin + "\n"
	if err := os.WriteFile(filepath.Join(root, "hack", "kube", "build.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	got, err := EnsureBinaries(t.Context(), root, &progress)
	if err != nil || got != bin {
		t.Fatalf("EnsureBinaries = %q, %v; want %q (progress %q)", got, err, bin, progress.String())
	}
	if !strings.Contains(progress.String(), "still held its output") {
		t.Errorf("progress does not say what was ended: %q", progress.String())
	}
}
