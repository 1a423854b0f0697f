// Package proc runs the child processes of the developer stack and of tests:
// binaries whose output goes to a log file, that can be stopped together with
// everything they forked, and that do not outlive the process that started
// them.
//
// The package is Unix-only: it manages process groups.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is one child process. Its output goes to a file rather than to the
// caller's log: kube-apiserver alone writes hundreds of lines, and the
// interesting ones are the last few, which errors quote.
type Process struct {
	Name    string // as given to Start
	LogPath string // logDir/<Name>.log

	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
	err  error         // from Wait; valid after done is closed
}

// Start runs path with args. Its stdout and stderr go to logDir/<name>.log,
// appended after a line that marks the start, so a restarted service's
// log still holds what its predecessor said; logDir is created if missing. env, if
// non-nil, is the child's full environment; nil inherits ours.
//
// The child leads its own process group, so Stop and Signal reach everything
// it forks. On Linux the kernel kills it if this process dies first; see
// sysProcAttr for the one way to defeat that.
func Start(name, path, logDir string, env []string, args ...string) (*Process, error) {
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, fmt.Errorf("create log folder for %s: %w", name, err)
	}
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create log for %s: %w", name, err)
	}
	fmt.Fprintf(f, "---- %s started %s\n", name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process ID, which is also its process group ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitError describes a process that died on its own, quoting the last 30
// lines of its log. It unwraps to the error from exec.Cmd.Wait. Call it once
// Exited is true; before that it only says the process is still running.
func (p *Process) ExitError() error {
	if !p.Exited() {
		return fmt.Errorf("%s has not exited", p.Name)
	}
	return &exitError{name: p.Name, err: p.err, logPath: p.LogPath, tail: Tail(p.LogPath, 30)}
}

// ExitCode is the process's exit status, or -1 if it has not exited or was
// killed by a signal.
func (p *Process) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process group, so anything the binary forked gets
// it too. It returns os.ErrProcessDone once the process has been reaped: its
// ID may then belong to someone else.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return os.ErrProcessDone
	}
	if err := syscall.Kill(-p.Pid(), sig); err != nil {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	return nil
}

// Stop sends SIGTERM to the process group, so anything the binary forked
// dies with it, then SIGKILL if the process has not exited after grace, and
// waits for it to be reaped. It returns nil if the process had already
// exited, so calling it again is harmless.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	pgid := p.Pid() // Setpgid makes the child its own group leader.
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s: %w", p.Name, err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s: %w", p.Name, err)
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

// PortConflict reports whether err comes from ExitError and the process died
// because another process took one of the ports FreePorts picked between
// probing and binding. Callers can retry with new ports.
func PortConflict(err error) bool {
	var e *exitError
	return errors.As(err, &e) && bytes.Contains([]byte(e.tail), []byte("address already in use"))
}

// Tail returns roughly the last n lines of a file, for error messages. If the
// file cannot be read, it says so instead.
func Tail(path string, n int) string {
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

// FreePorts returns n distinct 127.0.0.1 ports that were free a moment ago.
// All listeners stay open until the end so none is handed out twice.
//
// They are picked at random below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), never from it: every outgoing connection
// of every process on the machine takes its source port from that range,
// so a port picked there and freed again can be taken by, say, a
// kube-apiserver's client before the child binds it (seen in CI, with test
// packages running side by side). Another test process can still pick the
// same port between probing and binding, rarely; see PortConflict.
func FreePorts(n int) ([]int, error) {
	lo, hi := portsBelowEphemeral()
	var ports []int
	for len(ports) < n {
		var l net.Listener
		var err error
		for try := 0; try < 100; try++ {
			p := lo + rand.IntN(hi-lo)
			if l, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p)); err == nil {
				break
			}
		}
		if l == nil {
			// A crowded range: let the kernel choose.
			if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				return nil, fmt.Errorf("pick a free port: %w", err)
			}
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portsBelowEphemeral is the range FreePorts picks from: from 10000 to the
// start of the ephemeral range (32768 on Linux by default).
func portsBelowEphemeral() (lo, hi int) {
	lo, hi = 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if start, err := strconv.Atoi(f[0]); err == nil && start > lo+1000 {
				hi = start
			}
		}
	}
	return lo, hi
}
