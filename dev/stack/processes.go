package stack

// Starting, finding, restarting and waiting for the stack's processes.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tether-dev/tether/dev/proc"
)

// startService starts a Tether service (or a replica, "router-1") with its
// admin address and waits until it is ready.
func (s *Stack) startService(ctx context.Context, name string, a string, args ...string) error {
	s.Admin[name] = a
	service, _, _ := strings.Cut(name, "-")
	if name == "agent-registry" {
		service = name
	}
	p, err := s.start(ctx, name, append(append([]string{"--admin-addr", a}, args...), s.opts.Args[service]...)...)
	if err != nil {
		return err
	}
	if err := waitServing(ctx, a, p, args); err != nil {
		return err
	}
	fmt.Fprintf(s.opts.Log, "stack: %s ready (admin http://%s)\n", name, a)
	return nil
}

// Bin is the path of a built binary, such as "podtool" for test pods.
func (s *Stack) Bin(name string) string {
	p, err := filepath.Abs(filepath.Join(s.opts.BinDir, name))
	if err != nil {
		return filepath.Join(s.opts.BinDir, name)
	}
	return p
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func (s *Stack) start(ctx context.Context, name string, args ...string) (*proc.Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// A replica "router-1" runs the binary "router", an agent
	// "agent-c01" the binary "agent".
	bin := name
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			bin = name[:i]
		}
	}
	if strings.HasPrefix(name, "agent-") && name != "agent-registry" {
		bin = "agent"
	}
	if name == "gateway-embedded" {
		bin = "gateway"
	}
	path, argv := filepath.Join(s.opts.BinDir, bin), args
	if s.onTestHost(name) {
		path, argv = s.host.command(path, args)
	}
	p, err := proc.Start(name, path, filepath.Join(s.opts.StateDir, "logs"), nil, argv...)
	if err != nil {
		return nil, err
	}
	// A restarted service takes its predecessor's place, so Down still
	// stops services in the reverse of their first start and the list
	// holds each once however often make run restarts one.
	replaced := false
	if old := s.byName[name]; old != nil && old.Exited() {
		for i := range s.procs {
			if s.procs[i] == old {
				s.procs[i], replaced = p, true
				break
			}
		}
	}
	if !replaced {
		s.procs = append(s.procs, p)
	}
	s.byName[name] = p
	s.args[name] = args
	return p, nil
}

// Args are the flags a service was started with.
func (s *Stack) Args(name string) []string { return s.args[name] }

// Names are every process the stack started, oldest first.
func (s *Stack) Names() []string {
	out := make([]string, 0, len(s.byName))
	seen := map[string]bool{}
	for _, p := range s.procs {
		if !seen[p.Name] {
			seen[p.Name] = true
			out = append(out, p.Name)
		}
	}
	return out
}

// Process returns the running process of a service, to signal or restart.
func (s *Stack) Process(name string) *proc.Process { return s.byName[name] }

// Restart stops a service with SIGTERM and starts it again with the same
// flags, waiting until it is ready.
func (s *Stack) Restart(ctx context.Context, name string) error {
	old := s.byName[name]
	if old == nil {
		return fmt.Errorf("stack: no service %q", name)
	}
	if err := old.Stop(30 * time.Second); err != nil {
		return err
	}
	started := time.Now()
	p, err := s.start(ctx, name, s.args[name]...)
	if err != nil {
		return err
	}
	if name == "devnode" { // no admin address: its Node tells
		return s.waitNode(ctx, p, started)
	}
	if name == "devidp" { // nor the identity provider: it serves
		return s.waitHTTPS(ctx, s.IssuerURL+"/healthz", p)
	}
	for i := range s.NATSURLs {
		if name == replicaName("natsd", i) { // nor NATS: a login tells
			return s.waitNATS(ctx, p, s.NATSURLs[i])
		}
	}
	return waitServing(ctx, s.Admin[name], p, s.args[name])
}

// waitHTTPS waits until url answers over TLS trusting the stack's CA.
func (s *Stack) waitHTTPS(ctx context.Context, url string, p *proc.Process) error {
	client, err := s.HTTPClient()
	if err != nil {
		return err
	}
	client.Timeout = 2 * time.Second
	return poll(ctx, p, 30*time.Second, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitReady(ctx context.Context, adminAddr string, p *proc.Process) error {
	client := &http.Client{Timeout: 2 * time.Second}
	return poll(ctx, p, 60*time.Second, func() bool {
		resp, err := client.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitServing waits until the service is ready and, if it serves on a
// --listen address, until it listens there. A service reports ready on its
// admin address before it binds its own: in that moment the next
// FreePorts could hand the same port to another service, which would
// take it first (seen in CI).
func waitServing(ctx context.Context, adminAddr string, p *proc.Process, args []string) error {
	if err := waitReady(ctx, adminAddr, p); err != nil {
		return err
	}
	for i, a := range args {
		if a != "--listen" || i+1 >= len(args) {
			continue
		}
		_, port, err := net.SplitHostPort(args[i+1])
		if err != nil {
			return fmt.Errorf("stack: %s --listen %q: %w", p.Name, args[i+1], err)
		}
		n, _ := strconv.Atoi(port)
		return poll(ctx, p, 60*time.Second, func() bool { return listening(p.Pid(), n) })
	}
	return nil
}

// listening reports whether pid itself holds a socket listening on port,
// from /proc: no connection is made, so nothing lands in the service's
// log, and a port another process took does not count.
func listening(pid, port int) bool {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	own := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			own[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	hex := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			// sl local_address rem_address st ... inode: st 0A is LISTEN.
			fields := strings.Fields(line)
			if len(fields) > 9 && fields[3] == "0A" && strings.HasSuffix(fields[1], hex) && own[fields[9]] {
				return true
			}
		}
	}
	return false
}

// poll waits for ok, failing early if the process dies.
func poll(ctx context.Context, p *proc.Process, limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if p.Exited() {
			return p.ExitError()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stack: %s not ready after %v; log %s:\n%s", p.Name, limit, p.LogPath, proc.Tail(p.LogPath, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
