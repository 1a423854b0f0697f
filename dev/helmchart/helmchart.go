// Package helmchart runs the real helm against deploy/helm/tether: it
// builds helm from the Go module proxy (hack/helm/build.sh, cached by
// version), renders the chart, and turns what it renders into the Pods its
// workloads would create, so that a kube-apiserver's Pod Security admission,
// which refuses Pods but only warns about Deployments, judges them.
package helmchart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/yaml"
)

// EnsureHelm runs hack/helm/build.sh under repoRoot, streaming its
// progress to progress, and returns the helm binary's path. The script
// returns at once when helm is cached.
func EnsureHelm(ctx context.Context, repoRoot string, progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	script := filepath.Join(repoRoot, "hack", "helm", "build.sh")
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = repoRoot
	cmd.Stdout, cmd.Stderr = &stdout, progress
	// Cancel go build too, not only bash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building helm with %s: %w", script, err)
	}
	path := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(path, '\n'); i >= 0 {
		path = path[i+1:]
	}
	if path == "" {
		return "", fmt.Errorf("building helm with %s: it printed no path", script)
	}
	return path, nil
}

// Helm runs one helm binary with its state kept out of the user's home.
type Helm struct {
	bin string
	env []string
}

// New validates bin and uses dir for helm's cache, configuration and data.
func New(bin, dir string) (*Helm, error) {
	if bin == "" || dir == "" {
		return nil, errors.New("helmchart: helm binary and state folder are required")
	}
	return &Helm{bin: bin, env: []string{
		"HELM_CACHE_HOME=" + filepath.Join(dir, "cache"),
		"HELM_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"HELM_DATA_HOME=" + filepath.Join(dir, "data"),
	}}, nil
}

// Run runs helm with args and returns its stdout; the error carries stderr.
func (h *Helm) Run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(cmd.Environ(), h.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("helm %s: %w\n%s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return out.Bytes(), nil
}

// Objects splits rendered manifests into objects, leaving out empty
// documents.
func Objects(manifests []byte) ([]map[string]any, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifests), 4096)
	var out []map[string]any
	for {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading rendered manifests: %w", err)
		}
		if len(obj) > 0 {
			out = append(out, obj)
		}
	}
}

// PodsOf returns, for each Deployment and StatefulSet among objs, a Pod
// made from its template as its controller would make it (a StatefulSet's
// volume claims become volumes), named after the workload.
func PodsOf(objs []map[string]any) ([]map[string]any, error) {
	var pods []map[string]any
	for _, o := range objs {
		kind, _ := o["kind"].(string)
		if kind != "Deployment" && kind != "StatefulSet" {
			continue
		}
		meta, _ := o["metadata"].(map[string]any)
		spec, _ := o["spec"].(map[string]any)
		tmpl, _ := spec["template"].(map[string]any)
		podSpec, _ := tmpl["spec"].(map[string]any)
		if meta == nil || podSpec == nil {
			return nil, fmt.Errorf("%s without metadata or a pod template", kind)
		}
		name, _ := meta["name"].(string)
		if kind == "StatefulSet" {
			claims, _ := spec["volumeClaimTemplates"].([]any)
			vols, _ := podSpec["volumes"].([]any)
			for _, c := range claims {
				cn, _ := c.(map[string]any)["metadata"].(map[string]any)["name"].(string)
				vols = append(vols, map[string]any{"name": cn,
					"persistentVolumeClaim": map[string]any{"claimName": cn + "-" + name + "-0"}})
			}
			podSpec["volumes"] = vols
		}
		podMeta := map[string]any{"name": strings.ToLower(kind) + "-" + name}
		if ns, ok := meta["namespace"]; ok {
			podMeta["namespace"] = ns
		}
		if tm, ok := tmpl["metadata"].(map[string]any); ok {
			podMeta["labels"] = tm["labels"]
		}
		pods = append(pods, map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": podMeta, "spec": podSpec})
	}
	return pods, nil
}
