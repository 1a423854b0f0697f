package kube

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 10 * time.Second

// process is one child of the control plane. Its output goes to a file rather
// than to the test log: kube-apiserver alone writes hundreds of lines, and the
// interesting ones are the last few, which errors quote.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{} // closed once the process has been reaped
	err     error         // from Wait; valid after done is closed
}

func startProcess(name, binDir, logDir string, args ...string) (*process, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log for %s: %w", name, err)
	}
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, log: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes a process that died on its own, quoting its log.
func (p *process) exitError() error {
	return &exitError{name: p.name, err: p.err, logPath: p.logPath, tail: tail(p.logPath, 30)}
}

// stop signals the whole process group, so anything the binary forked dies
// with it, and waits for the process to be reaped.
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	pgid := p.cmd.Process.Pid // Setpgid makes the child its own group leader.
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	<-p.done
	return nil
}

type exitError struct {
	name    string
	err     error
	logPath string
	tail    string
}

func (e *exitError) Error() string {
	return fmt.Sprintf("%s exited early (%v); last lines of %s:\n%s", e.name, e.err, e.logPath, e.tail)
}

func (e *exitError) Unwrap() error { return e.err }

// portConflict reports whether the process died because another process took
// one of the ports we picked between probing and binding.
func (e *exitError) portConflict() bool {
	return bytes.Contains([]byte(e.tail), []byte("address already in use"))
}

// tail returns roughly the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	b = bytes.TrimRight(b, "\n")
	const maxBytes = 8 << 10 // a single klog line can be kilobytes long
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
	}
	for i, count := len(b)-1, 0; i >= 0; i-- {
		if b[i] == '\n' {
			if count++; count == n {
				b = b[i+1:]
				break
			}
		}
	}
	return string(b)
}
