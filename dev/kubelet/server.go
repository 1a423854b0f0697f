package kubelet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/creack/pty"
	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/kubelet/pkg/cri/streaming/portforward"
	remotecommandserver "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// handler serves the kubelet API paths the kube-apiserver proxies to.
func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	for _, prefix := range []string{"/exec/{ns}/{pod}/{container}", "/exec/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc(prefix, n.serveRemoteCommand(false))
	}
	for _, prefix := range []string{"/attach/{ns}/{pod}/{container}", "/attach/{ns}/{pod}/{uid}/{container}"} {
		mux.HandleFunc(prefix, n.serveRemoteCommand(true))
	}
	for _, prefix := range []string{"/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"} {
		mux.HandleFunc(prefix, n.servePortForward)
	}
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", n.serveLogs)
	return mux
}

// find resolves the pod and container of a request, answering 404 as the
// kubelet does when either is unknown.
func (n *Node) find(w http.ResponseWriter, r *http.Request) (*pod, *container, bool) {
	p := n.lookup(r.PathValue("ns"), r.PathValue("pod"))
	if p == nil || (r.PathValue("uid") != "" && types.UID(r.PathValue("uid")) != p.uid) {
		http.Error(w, fmt.Sprintf("pod %s/%s not found", r.PathValue("ns"), r.PathValue("pod")), http.StatusNotFound)
		return nil, nil, false
	}
	c := p.container(r.PathValue("container"))
	if c == nil {
		http.Error(w, fmt.Sprintf("container %q not found in pod %q", r.PathValue("container"), p.name), http.StatusNotFound)
		return nil, nil, false
	}
	return p, c, true
}

// serveRemoteCommand serves exec, or attach with attach set: the same
// stream options and protocols, a different thing at the other end.
func (n *Node) serveRemoteCommand(attach bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, c, ok := n.find(w, r)
		if !ok {
			return
		}
		opts, err := remotecommandserver.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		idle, creation, protocols := n.cfg.StreamIdleTimeout, n.cfg.StreamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols
		w, r, cancel := watchClient(w, r)
		defer cancel()
		if attach {
			remotecommandserver.ServeAttach(w, r, attacher{c}, p.name, p.uid, c.spec.Name, opts, idle, creation, protocols)
			return
		}
		remotecommandserver.ServeExec(w, r, executor{p, c}, p.name, p.uid, c.spec.Name, r.URL.Query()["command"], opts, idle, creation, protocols)
	}
}

func (n *Node) servePortForward(w http.ResponseWriter, r *http.Request) {
	p := n.lookup(r.PathValue("ns"), r.PathValue("pod"))
	if p == nil || (r.PathValue("uid") != "" && types.UID(r.PathValue("uid")) != p.uid) {
		http.Error(w, fmt.Sprintf("pod %s/%s not found", r.PathValue("ns"), r.PathValue("pod")), http.StatusNotFound)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, forwarder{p}, p.name, p.uid, opts, n.cfg.StreamIdleTimeout, n.cfg.StreamCreationTimeout, portforward.SupportedProtocols)
}

// executor runs exec commands as host processes with the pod's
// environment and folder.
type executor struct {
	p *pod
	c *container
}

func (e executor) ExecInContainer(ctx context.Context, _ string, _ types.UID, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if len(cmd) == 0 {
		return errors.New("no command given")
	}
	proc := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	proc.Env, proc.Dir = e.p.env(e.c.spec.Env), e.p.workDir(e.c.spec.WorkingDir)
	proc.SysProcAttr = sysProcAttr()
	// The client going away kills everything the command started.
	proc.Cancel = func() error { return syscall.Kill(-proc.Process.Pid, syscall.SIGKILL) }
	proc.WaitDelay = 2 * time.Second
	// The pod's end ends the session, as a container's cgroup would.
	started := func() error {
		if err := e.p.addExec(proc.Process.Pid); err != nil {
			_ = syscall.Kill(-proc.Process.Pid, syscall.SIGKILL)
			_ = proc.Wait()
			return err
		}
		return nil
	}
	var err error
	if tty {
		err = runOnTerminal(proc, in, out, resize, started)
	} else {
		err = runPiped(proc, in, out, errw, started)
	}
	if proc.Process != nil {
		e.p.removeExec(proc.Process.Pid)
	}
	ps := proc.ProcessState
	if ps == nil || errors.Is(err, errTerminating) {
		return err // it never started, or not for long
	}
	if ps.Success() {
		// Even if a child it left behind held the output past WaitDelay.
		return nil
	}
	return utilexec.CodeExitError{Err: fmt.Errorf("command ended: %s", ps), Code: exitCode(ps)}
}

// runPiped runs proc with its own pipes: the end of the client's input
// closes the command's stdin, so `cat` ends.
func runPiped(proc *exec.Cmd, in io.Reader, out, errw io.Writer, started func() error) error {
	proc.SysProcAttr.Setpgid = true
	if out != nil {
		proc.Stdout = out
	}
	if errw != nil {
		proc.Stderr = errw
	}
	if in != nil {
		stdin, err := proc.StdinPipe()
		if err != nil {
			return err
		}
		go func() {
			_, _ = io.Copy(stdin, in)
			stdin.Close()
		}()
	}
	if err := proc.Start(); err != nil {
		return err
	}
	if err := started(); err != nil {
		return err
	}
	return proc.Wait()
}

// runOnTerminal runs proc on a new pseudo-terminal sized by the client.
func runOnTerminal(proc *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize, started func() error) error {
	term, err := pty.Start(proc)
	if err != nil {
		return fmt.Errorf("starting %q on a terminal: %w", proc.Path, err)
	}
	defer term.Close()
	if err := started(); err != nil {
		return err
	}
	go applyResizes(term, resize)
	if in != nil {
		go func() {
			_, _ = io.Copy(term, in)
			// The client's terminal is gone: hang up, as closing a real
			// terminal does, or a shell would wait on it for ever.
			_ = syscall.Kill(-proc.Process.Pid, syscall.SIGHUP)
		}()
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		if out != nil {
			// Ends with EIO once the process and its children are gone.
			_, _ = io.Copy(out, term)
		}
	}()
	err = proc.Wait()
	// What the command left on the terminal goes with it.
	_ = syscall.Kill(-proc.Process.Pid, syscall.SIGKILL)
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	return err
}

// watchClient returns w and r such that r's context also ends when the
// client's connection does. Once a connection is upgraded net/http stops
// watching it, and the streaming library does not tell an executor that
// its client left: without this, an interrupted `kubectl exec -- sleep 1h`
// would leave sleep running for the hour.
func watchClient(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	return &hijackWatcher{ResponseWriter: w, gone: cancel}, r.WithContext(ctx), cancel
}

type hijackWatcher struct {
	http.ResponseWriter
	gone context.CancelFunc
}

func (h *hijackWatcher) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h *hijackWatcher) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &watchedConn{Conn: conn, gone: h.gone}, brw, nil
}

// watchedConn calls gone when reading fails or the connection is closed:
// either way the client is no longer there.
type watchedConn struct {
	net.Conn
	gone context.CancelFunc
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.gone()
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.gone()
	return c.Conn.Close()
}

type attacher struct{ c *container }

func (a attacher) AttachContainer(ctx context.Context, _ string, _ types.UID, _ string, in io.Reader, out, errw io.WriteCloser, _ bool, resize <-chan remotecommand.TerminalSize) error {
	return a.c.attach(ctx, in, out, errw, resize)
}

// forwarder connects port-forward streams to the pod's address.
type forwarder struct{ p *pod }

func (f forwarder) PortForward(ctx context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(f.p.ip.String(), strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("connecting to port %d of pod %s: %w", port, f.p.name, err)
	}
	defer conn.Close()
	go func() {
		if _, err := io.Copy(conn, stream); err != nil {
			// The client is gone, not done: so is this connection.
			conn.Close()
			return
		}
		// The client's end of input is the pod's.
		_ = conn.(*net.TCPConn).CloseWrite()
	}()
	_, err = io.Copy(stream, conn)
	return err
}

// serveLogs serves a container's log like the kubelet: the runtime's
// format stripped (or its time kept with timestamps=true), selected by
// tailLines, sinceSeconds, sinceTime and limitBytes, and followed until the
// container exits.
func (n *Node) serveLogs(w http.ResponseWriter, r *http.Request) {
	p, c, ok := n.find(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	follow, timestamps := q.Get("follow") == "true", q.Get("timestamps") == "true"
	tail := -1
	if v := q.Get("tailLines"); v != "" {
		t, err := strconv.Atoi(v)
		if err != nil || t < 0 {
			http.Error(w, "tailLines must be a non-negative integer", http.StatusBadRequest)
			return
		}
		tail = t
	}
	var since time.Time
	if v := q.Get("sinceSeconds"); v != "" {
		s, err := strconv.Atoi(v)
		if err != nil || s <= 0 {
			http.Error(w, "sinceSeconds must be a positive integer", http.StatusBadRequest)
			return
		}
		since = time.Now().Add(-time.Duration(s) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			http.Error(w, "sinceTime must be RFC 3339", http.StatusBadRequest)
			return
		}
		since = t
	}
	limit := int64(-1)
	if v := q.Get("limitBytes"); v != "" {
		l, err := strconv.ParseInt(v, 10, 64)
		if err != nil || l <= 0 {
			http.Error(w, "limitBytes must be a positive integer", http.StatusBadRequest)
			return
		}
		limit = l
	}

	var path string
	var inst *instance
	if q.Get("previous") == "true" {
		cur := c.current()
		prev := c.lastTerminated(cur != nil && !cur.running() && p.willRestart(cur))
		if prev == nil {
			http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found", c.spec.Name, p.name), http.StatusBadRequest)
			return
		}
		path, follow = prev.logPath, false
	} else {
		if inst = c.current(); inst == nil {
			http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start", c.spec.Name, p.name), http.StatusBadRequest)
			return
		}
		path = inst.logPath
	}
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, "opening the log: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain")
	lw := &logWriter{w: w, limit: limit, timestamps: timestamps}
	br := bufio.NewReader(f)

	// What is there now, with tail applied.
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			// A partial last line is read again once it is complete.
			if _, serr := f.Seek(-int64(len(line)), io.SeekCurrent); serr == nil {
				br.Reset(f)
			}
			break
		}
		if e, ok := parseCRI(line); ok && !e.time.Before(since) {
			lines = append(lines, line)
		}
	}
	if tail >= 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	for _, l := range lines {
		if !lw.write(l) {
			return
		}
	}
	lw.flush()
	if !follow || inst == nil {
		return
	}
	pending := ""
	for {
		// Checked before reading: once the process has exited, its last
		// lines are in the file, and this pass reads them.
		exited := !inst.running()
		for {
			line, err := br.ReadString('\n')
			pending += line
			if err != nil {
				break
			}
			if e, ok := parseCRI(pending); ok && !e.time.Before(since) && !lw.write(pending) {
				return
			}
			pending = ""
		}
		lw.flush()
		if exited {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-inst.exited:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type criEntry struct {
	time    time.Time
	stream  string
	partial bool
	text    string
}

// parseCRI reads "<RFC3339Nano> <stream> <F|P> <text>\n".
func parseCRI(line string) (criEntry, bool) {
	parts := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
	if len(parts) != 4 {
		return criEntry{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, parts[0])
	if err != nil {
		return criEntry{}, false
	}
	return criEntry{time: t, stream: parts[1], partial: parts[2] == "P", text: parts[3]}, true
}

// logWriter writes log entries to a client, up to limit bytes.
type logWriter struct {
	w          http.ResponseWriter
	limit      int64
	written    int64
	timestamps bool
}

func (l *logWriter) write(line string) bool {
	e, ok := parseCRI(line)
	if !ok {
		return true
	}
	out := e.text
	if !e.partial {
		out += "\n"
	}
	if l.timestamps {
		out = e.time.Format(time.RFC3339Nano) + " " + out
	}
	if l.limit >= 0 && l.written+int64(len(out)) > l.limit {
		out = out[:l.limit-l.written]
	}
	n, err := io.WriteString(l.w, out)
	l.written += int64(n)
	return err == nil && (l.limit < 0 || l.written < l.limit)
}

func (l *logWriter) flush() {
	if f, ok := l.w.(http.Flusher); ok {
		f.Flush()
	}
}
