package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// binaries are the commands Start runs from Config.BinDir.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}

// EnsureBinaries runs hack/kube/build.sh under repoRoot, streaming its
// progress to progress, and returns the folder holding the binaries. The
// script returns at once when the binaries are cached; the first build takes
// many minutes.
func EnsureBinaries(ctx context.Context, repoRoot string, progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	script := filepath.Join(repoRoot, "hack", "kube", "build.sh")
	// go test runs packages in parallel, and build.sh writes each binary to
	// a fixed .tmp name: two concurrent builds would corrupt each other.
	unlock, err := lock(ctx, script, progress)
	if err != nil {
		return "", err
	}
	defer unlock()

	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = repoRoot
	cmd.Stdout, cmd.Stderr = &stdout, progress
	// Cancel the go build processes too, not only bash.
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		// ErrWaitDelay: the script succeeded, but something it left
		// behind still held its output. What it printed is complete, and
		// failing a build of many minutes for that would be wrong.
		if !errors.Is(err, exec.ErrWaitDelay) {
			return "", fmt.Errorf("run %s: %w", script, err)
		}
		fmt.Fprintf(progress, "kube: %s succeeded, but a process it started still held its output; ended it\n", script)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	out := strings.TrimSpace(stdout.String())
	bin := strings.TrimSpace(out[strings.LastIndexByte(out, '\n')+1:])
	if bin == "" {
		return "", fmt.Errorf("run %s: printed no bin folder", script)
	}
	if err := checkBinaries(bin); err != nil {
		return "", fmt.Errorf("run %s: %w", script, err)
	}
	return bin, nil
}

func checkBinaries(dir string) error {
	for _, name := range binaries {
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("find %s: %s is not an executable file", name, path)
		}
	}
	return nil
}

// lock takes an exclusive flock on path, polling so that ctx can interrupt
// the wait. Locking the script itself needs no extra file and serializes
// every caller that uses the same checkout.
func lock(ctx context.Context, path string, progress io.Writer) (unlock func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	for waited := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !waited {
			fmt.Fprintf(progress, "kube: waiting for another run of %s to finish\n", path)
			waited = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
