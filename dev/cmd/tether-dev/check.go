package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// kubectlFor is the kubectl built with the control plane in kubeBin, whose
// version is the server's, or the one on PATH.
func kubectlFor(kubeBin string) string {
	if kubeBin != "" {
		k := filepath.Join(kubeBin, "kubectl")
		if _, err := os.Stat(k); err == nil {
			return k
		}
	}
	return "kubectl"
}

// checkStack is what a new user does first, through Tether as admin: list
// namespaces and, with the development node, run a pod and a Deployment
// and wait until they are Running there. It cleans up after itself.
func checkStack(ctx context.Context, kubectl, kubeconfig string, node bool) error {
	cache, err := os.MkdirTemp("", "tether-dev-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cache)
	run := func(args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		var out bytes.Buffer
		cmd := exec.CommandContext(cctx, kubectl, append([]string{"--kubeconfig", kubeconfig, "--cache-dir", cache}, args...)...)
		cmd.Stdout, cmd.Stderr = &out, &out
		started := time.Now()
		err := cmd.Run()
		fmt.Fprintf(os.Stderr, "check: kubectl %s (%s)\n%s", strings.Join(args, " "), time.Since(started).Round(100*time.Millisecond), indent(out.String()))
		if err != nil {
			return out.String(), fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
		}
		return out.String(), nil
	}
	steps := [][]string{{"version"}, {"get", "ns"}}
	if node {
		steps = append(steps,
			[]string{"run", "tether-check", "--image=busybox", "--", "sleep", "3600"},
			[]string{"create", "deployment", "tether-check-web", "--image=nginx", "--port=8080"},
			[]string{"wait", "pod/tether-check", "--for=jsonpath={.status.phase}=Running", "--timeout=120s"},
			[]string{"rollout", "status", "deployment/tether-check-web", "--timeout=120s"},
			[]string{"get", "pods", "-o", "wide"},
			[]string{"delete", "pod/tether-check", "deployment/tether-check-web", "--wait=false"},
		)
	}
	for _, args := range steps {
		if _, err := run(args...); err != nil {
			return fmt.Errorf("check: %w", err)
		}
	}
	fmt.Fprintln(os.Stderr, "check: the stack works through Tether")
	return nil
}

func indent(s string) string {
	if s = strings.TrimRight(s, "\n"); s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}
