package kubelet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/remotecommand"
)

// container is one container of a pod: a host process, restarted by the
// pod's policy, whose output goes to a log file in the container runtime's
// format and to every attached client.
type container struct {
	pod  *pod
	spec corev1.Container

	mu        sync.Mutex
	instance  *instance // the newest; nil before the first start
	previous  *instance // the one before it, for --previous and lastState
	restarts  int
	stdinUsed bool // stdinOnce: the first attach session's stdin has ended
}

// instance is one run of a container's process.
type instance struct {
	id       string // the containerID of the status
	logPath  string
	started  time.Time
	exited   chan struct{} // closed once the process has exited and its output is logged
	exitCode int
	finished time.Time
	err      error // why it could not start
	// standIn: the container names only an image, and this instance runs
	// the node's stand-in program in its place.
	standIn bool

	proc  *exec.Cmd
	stdin io.WriteCloser // nil unless spec.Stdin
	tty   *os.File       // the terminal's controlling side, with spec.TTY

	out *fanout
}

// start runs a new instance of the container, and records an Event saying
// how that went.
func (c *container) start() {
	command := append(append([]string{}, c.spec.Command...), c.spec.Args...)
	c.mu.Lock()
	n := c.restarts
	if c.instance != nil {
		n++
		c.restarts = n
	}
	logPath := filepath.Join(c.pod.dir, c.spec.Name+"-"+strconv.Itoa(n)+".log")
	inst := &instance{
		id:      fmt.Sprintf("host://%s-%s-%d", c.pod.uid, c.spec.Name, n),
		logPath: logPath, started: time.Now(), exited: make(chan struct{}), out: newFanout(),
	}
	c.stdinUsed = false
	c.mu.Unlock()
	// Published once its fields are set: stop, attach and the status read
	// them.
	defer func() {
		c.mu.Lock()
		c.previous, c.instance = c.instance, inst
		c.mu.Unlock()
	}()

	if len(command) == 0 {
		inst.standIn = true
		command = standInCommand(c.pod.node.cfg.StandIn, c.spec)
	}
	// Every way this can fail, reported as a kubelet reports a container
	// its runtime could not start.
	fail := func(err error) {
		inst.fail(err)
		c.pod.event(c.spec.Name, corev1.EventTypeWarning, "Failed", "Error: "+err.Error())
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail(fmt.Errorf("creating log file: %w", err))
		return
	}
	cmd := exec.Command(command[0], command[1:]...)
	// A node killed outright must not leave its pods' processes holding
	// pod addresses that the next node hands out again.
	cmd.SysProcAttr = sysProcAttr()
	cmd.Env = c.pod.env(c.spec.Env)
	cmd.Dir = c.pod.workDir(c.spec.WorkingDir)
	inst.proc = cmd

	logs := &criLog{w: logFile}
	var closeOutputs func()
	var outputs sync.WaitGroup
	copyOut := func(stream string, r io.Reader) {
		outputs.Add(1)
		go func() {
			defer outputs.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := r.Read(buf)
				if n > 0 {
					logs.write(stream, buf[:n])
					inst.out.write(stream, buf[:n])
				}
				if err != nil {
					return
				}
			}
		}()
	}

	if c.spec.TTY {
		tty, err := pty.Start(cmd)
		if err != nil {
			logFile.Close()
			fail(fmt.Errorf("starting %q on a terminal: %w", command[0], err))
			return
		}
		inst.tty = tty
		if c.spec.Stdin {
			inst.stdin = tty
		}
		copyOut("stdout", tty)
		closeOutputs = func() { tty.Close() }
	} else {
		// The container's own process group, so stopping it reaches what
		// it forked. (pty.Start makes a session, which is a group too.)
		cmd.SysProcAttr.Setpgid = true
		var stdinR *os.File
		if c.spec.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				logFile.Close()
				fail(err)
				return
			}
			cmd.Stdin, stdinR, inst.stdin = r, r, w
		}
		// Our own pipes, not StdoutPipe: Wait closes those, and output still
		// in them when the process exits would be lost.
		stdoutR, stdoutW, err := os.Pipe()
		if err != nil {
			logFile.Close()
			fail(err)
			return
		}
		stderrR, stderrW, err := os.Pipe()
		if err != nil {
			logFile.Close()
			fail(err)
			return
		}
		cmd.Stdout, cmd.Stderr = stdoutW, stderrW
		err = cmd.Start()
		// The child has its copies.
		stdoutW.Close()
		stderrW.Close()
		if stdinR != nil {
			stdinR.Close()
		}
		if err != nil {
			stdoutR.Close()
			stderrR.Close()
			logFile.Close()
			fail(fmt.Errorf("starting %q: %w", command[0], err))
			return
		}
		copyOut("stdout", stdoutR)
		copyOut("stderr", stderrR)
		closeOutputs = func() { stdoutR.Close(); stderrR.Close() }
	}
	c.pod.log("container started", "container", c.spec.Name, "pid", cmd.Process.Pid, "stand_in", inst.standIn)
	c.pod.event(c.spec.Name, corev1.EventTypeNormal, "Started", "Started container "+c.spec.Name)
	if inst.standIn {
		c.pod.event(c.spec.Name, corev1.EventTypeNormal, "StandIn", standInMessage(c.spec))
	}

	go func() {
		_ = cmd.Wait()
		// The container ends with its main process, as a runtime tears down
		// the container's processes: children left in the background go
		// too, and with them their hold on the output.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		drained := make(chan struct{})
		go func() { outputs.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(2 * time.Second):
			closeOutputs()
			<-drained
		}
		closeOutputs()
		logs.flush()
		logFile.Close()
		code := exitCode(cmd.ProcessState)
		if inst.stdin != nil && inst.tty == nil {
			inst.stdin.Close()
		}
		inst.exitCode, inst.finished = code, time.Now()
		inst.out.close()
		close(inst.exited)
		c.pod.log("container exited", "container", c.spec.Name, "code", code)
	}()
}

// standInCommand runs the stand-in program for a container that names only
// an image, with the TCP ports the container declares.
func standInCommand(program string, spec corev1.Container) []string {
	return []string{program, "standin", "--image", spec.Image, "--ports", strings.Join(tcpPorts(spec), ",")}
}

func tcpPorts(spec corev1.Container) []string {
	var ports []string
	for _, p := range spec.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			ports = append(ports, strconv.Itoa(int(p.ContainerPort)))
		}
	}
	return ports
}

// standInMessage says what runs in place of a container's image, and why.
func standInMessage(spec corev1.Container) string {
	serves := "the container declares no TCP port, so the stand-in only sleeps"
	if ports := tcpPorts(spec); len(ports) > 0 {
		serves = "the stand-in answers HTTP on port " + strings.Join(ports, ", ") + " at the pod's IP and sleeps"
	}
	return fmt.Sprintf("container %s runs a stand-in for image %q: the development node runs containers as host processes, "+
		"not images, and the container names no command; %s. Give the container a command to run a program of this machine.",
		spec.Name, spec.Image, serves)
}

// exitCode is the code a container runtime reports: the process's own, or
// 128 plus the signal that ended it.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return 128
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func (i *instance) fail(err error) {
	i.err, i.exitCode, i.finished = err, 128, time.Now()
	i.out.close()
	close(i.exited)
}

// terminated is how the pod status reports the instance's end. Call it
// once the instance has exited.
func (i *instance) terminated() *corev1.ContainerStateTerminated {
	reason, msg := "Completed", ""
	if i.exitCode != 0 {
		reason = "Error"
	}
	if i.err != nil {
		reason, msg = "StartError", i.err.Error()
	}
	return &corev1.ContainerStateTerminated{
		ExitCode: int32(i.exitCode), Reason: reason, Message: msg, ContainerID: i.id,
		StartedAt: metav1.NewTime(i.started), FinishedAt: metav1.NewTime(i.finished),
	}
}

func (i *instance) running() bool {
	select {
	case <-i.exited:
		return false
	default:
		return true
	}
}

// stop signals the process group, and kills it after grace.
func (i *instance) stop(grace time.Duration) {
	if i.proc == nil || i.proc.Process == nil || !i.running() {
		return
	}
	pid := i.proc.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-i.exited:
	case <-time.After(grace):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-i.exited
	}
}

// current returns the newest instance.
func (c *container) current() *instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.instance
}

// lastTerminated is the instance the kubelet reports as the container's
// last termination state, and whose log --previous reads: the newest one
// while it waits to be restarted, else the one before it.
func (c *container) lastTerminated(restartPending bool) *instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	if inst := c.instance; inst != nil && !inst.running() && restartPending {
		return inst
	}
	return c.previous
}

// attach connects a client to the running instance: its output from now
// on, its stdin if the container has one, and terminal resizes.
func (c *container) attach(ctx context.Context, in io.Reader, out, errw io.WriteCloser, resize <-chan remotecommand.TerminalSize) error {
	inst := c.current()
	if inst == nil || !inst.running() {
		return fmt.Errorf("container %q is not running", c.spec.Name)
	}
	sub := inst.out.subscribe(out, errw)
	if in != nil && inst.stdin != nil {
		go func() {
			_, _ = io.Copy(inst.stdin, in)
			c.mu.Lock()
			once := c.spec.StdinOnce && !c.stdinUsed
			c.stdinUsed = true
			c.mu.Unlock()
			if once && inst.tty == nil {
				inst.stdin.Close()
			}
		}()
	}
	go applyResizes(inst.tty, resize)
	select {
	case <-ctx.Done():
	case <-inst.exited:
	case <-sub.gone:
	}
	inst.out.unsubscribe(sub)
	return sub.drain()
}

// applyResizes sets the terminal's size as the client's changes.
func applyResizes(tty *os.File, resize <-chan remotecommand.TerminalSize) {
	if resize == nil {
		return
	}
	for size := range resize {
		if tty != nil && size.Width > 0 && size.Height > 0 {
			_ = pty.Setsize(tty, &pty.Winsize{Rows: size.Height, Cols: size.Width})
		}
	}
}

// criLog writes output in the container runtime's log format, one line per
// entry: "<RFC3339Nano> <stream> F <text>", or P for a partial line.
type criLog struct {
	mu      sync.Mutex
	w       io.Writer
	pending map[string][]byte
}

func (l *criLog) write(stream string, p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = map[string][]byte{}
	}
	buf := append(l.pending[stream], p...)
	for {
		i := indexByte(buf, '\n')
		if i < 0 {
			break
		}
		l.entry(stream, "F", buf[:i])
		buf = buf[i+1:]
	}
	// Long lines without an end are logged in parts, as runtimes do.
	if len(buf) >= 16<<10 {
		l.entry(stream, "P", buf)
		buf = nil
	}
	l.pending[stream] = append([]byte(nil), buf...)
}

func (l *criLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for stream, buf := range l.pending {
		if len(buf) > 0 {
			l.entry(stream, "F", buf)
		}
	}
	l.pending = nil
}

func (l *criLog) entry(stream, tag string, text []byte) {
	bw := bufio.NewWriter(l.w)
	bw.WriteString(time.Now().UTC().Format(time.RFC3339Nano))
	bw.WriteString(" " + stream + " " + tag + " ")
	bw.Write(text)
	bw.WriteByte('\n')
	_ = bw.Flush()
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// fanout copies a container's output to attached clients. Each client has
// a bounded queue; one that falls behind by more than it holds is cut off
// rather than slowing the container or the others.
type fanout struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
}

type subscriber struct {
	queue chan chunk
	gone  chan struct{} // closed when the writer failed or was cut off
	done  chan struct{} // closed when the writer goroutine ended
	once  sync.Once
	err   error
}

type chunk struct {
	stream string
	data   []byte
}

const subscriberQueue = 256

func newFanout() *fanout { return &fanout{subs: map[*subscriber]struct{}{}} }

func (f *fanout) subscribe(out, errw io.Writer) *subscriber {
	s := &subscriber{queue: make(chan chunk, subscriberQueue), gone: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for c := range s.queue {
			w := out
			if c.stream == "stderr" && errw != nil {
				w = errw
			}
			if w == nil {
				continue
			}
			if _, err := w.Write(c.data); err != nil {
				s.cut(err)
				for range s.queue {
				}
				return
			}
		}
	}()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		close(s.queue)
		return s
	}
	f.subs[s] = struct{}{}
	return s
}

func (s *subscriber) cut(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.gone)
	})
}

func (f *fanout) write(stream string, p []byte) {
	data := append([]byte(nil), p...)
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		select {
		case s.queue <- chunk{stream, data}:
		default:
			s.cut(errors.New("attached client too slow: cut off"))
			delete(f.subs, s)
			close(s.queue)
		}
	}
}

func (f *fanout) unsubscribe(s *subscriber) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.subs[s]; ok {
		delete(f.subs, s)
		close(s.queue)
	}
}

// close ends every subscription once the output has ended; their queues
// still drain.
func (f *fanout) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for s := range f.subs {
		close(s.queue)
	}
	f.subs = map[*subscriber]struct{}{}
}

// drain waits until everything queued for s was written.
func (s *subscriber) drain() error {
	<-s.done
	return s.err
}
