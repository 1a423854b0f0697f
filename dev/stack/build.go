package stack

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the programs of the stack: Tether's services, the embedded
// NATS server, the development node and what its test pods run.
var Binaries = map[string]string{
	"gateway":        "./services/gateway/cmd/gateway",
	"router":         "./services/router/cmd/router",
	"subscriber":     "./services/subscriber/cmd/subscriber",
	"agent":          "./services/agent/cmd/agent",
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
