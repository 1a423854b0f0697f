package stack

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tether-dev/tether/dev/kube"
)

// Binaries are the programs of the stack: Tether's services, the embedded
// NATS server, the development node and what its test pods run.
var Binaries = map[string]string{
	"gateway":        "./services/gateway/cmd/gateway",
	"router":         "./services/router/cmd/router",
	"subscriber":     "./services/subscriber/cmd/subscriber",
	"agent":          "./services/agent/cmd/agent",
	"agentsim":       "./services/agent/cmd/agentsim",
	"agent-registry": "./services/agent-registry/cmd/agent-registry",
	"audit":          "./services/audit/cmd/audit",
	"autoscaler":     "./services/autoscaler/cmd/autoscaler",
	"natsd":          "./dev/cmd/natsd",
	"devnode":        "./dev/cmd/devnode",
	"podtool":        "./dev/cmd/podtool",
	"devidp":         "./dev/cmd/devidp",
	"tetherctl":      "./cmd/tetherctl",
	"tether-dev":     "./dev/cmd/tether-dev",
}

// Build compiles every binary into dir with one go build, so packages
// shared between services compile once.
func Build(ctx context.Context, root, dir string, progress io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	pkgs := make([]string, 0, len(Binaries))
	for _, p := range Binaries {
		pkgs = append(pkgs, p)
	}
	fmt.Fprintf(progress, "stack: building %d binaries into %s\n", len(pkgs), dir)
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = root
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out.String())
	}
	return nil
}

// RepoRoot finds the folder holding go.work, walking up from dir.
func RepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above %s", dir)
		}
		dir = parent
	}
}

// Workspace is what a test package needs before Up: the repository, the
// Kubernetes binaries (built on first use), and a scratch folder with every
// binary of the stack built into it.
type Workspace struct {
	Root    string
	KubeBin string
	// Dir is the scratch folder; BinDir holds the built binaries.
	Dir    string
	BinDir string
}

// NewWorkspace prepares a Workspace in a new folder named after prefix;
// Close removes it.
func NewWorkspace(ctx context.Context, prefix string, progress io.Writer) (*Workspace, error) {
	root, err := RepoRoot(".")
	if err != nil {
		return nil, err
	}
	kubeBin, err := kube.EnsureBinaries(ctx, root, progress)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	w := &Workspace{Root: root, KubeBin: kubeBin, Dir: dir, BinDir: filepath.Join(dir, "bin")}
	if err := Build(ctx, root, w.BinDir, progress); err != nil {
		_ = w.Close()
		return nil, err
	}
	return w, nil
}

// Kubectl is the kubectl a user has, or the one built with the control
// plane.
func (w *Workspace) Kubectl() string {
	if p, err := exec.LookPath("kubectl"); err == nil {
		return p
	}
	return filepath.Join(w.KubeBin, "kubectl")
}

// Close removes the scratch folder.
func (w *Workspace) Close() error { return os.RemoveAll(w.Dir) }

// Commit is the short hash of root's HEAD, and whether paths differ from
// it: what a report says it measured.
func Commit(root string, paths ...string) (hash string, dirty bool) {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown", false
	}
	diff := exec.Command("git", append([]string{"-C", root, "diff", "--quiet", "HEAD", "--"}, paths...)...)
	return strings.TrimSpace(string(out)), diff.Run() != nil
}
