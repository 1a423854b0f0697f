package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tether-dev/tether/dev/proc"
)

// Fenced is a test host whose firewall lets it open connections only to
// the addresses it was given on this machine: a customer's cluster whose
// egress allows one proxy (and its own kube-apiserver), for agents that
// must prove they need nothing else. Connections opened toward it (its
// admin endpoint, read by the test) are answered. Needs root, iproute2 and
// iptables.
type Fenced struct {
	h *testHost
}

// NewFenced makes the host; Allow opens its way to ports of this machine.
func NewFenced() (*Fenced, error) {
	h, err := newTestHost()
	if err != nil {
		return nil, err
	}
	// Replies to connections opened toward it pass (no new connection
	// starts with a bare ACK); then what Allow added to its own chain; the
	// rest is refused at once, so what tries it fails loudly rather than
	// hangs.
	rules := [][]string{
		{"-N", fencedChain},
		{"-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"},
		{"-A", "OUTPUT", "-p", "tcp", "!", "--syn", "-j", "ACCEPT"},
		{"-A", "OUTPUT", "-j", fencedChain},
		{"-A", "OUTPUT", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"},
		{"-A", "OUTPUT", "-j", "REJECT"},
	}
	f := &Fenced{h: h}
	for _, r := range rules {
		if err := f.iptables(r...); err != nil {
			_ = h.close()
			return nil, err
		}
	}
	return f, nil
}

const fencedChain = "TETHER-ALLOWED"

// Allow lets the host connect to port on HostIP.
func (f *Fenced) Allow(port int) error {
	return f.iptables("-A", fencedChain, "-p", "tcp", "-d", f.h.hostIP, "--dport", strconv.Itoa(port), "-j", "ACCEPT")
}

func (f *Fenced) iptables(args ...string) error {
	return run(append([]string{"ip", "netns", "exec", f.h.name, "iptables", "-w"}, args...)...)
}

// IP is the host's address; HostIP is this machine's address toward it,
// where what it may reach must listen.
func (f *Fenced) IP() string     { return f.h.ip }
func (f *Fenced) HostIP() string { return f.h.hostIP }

// Start runs bin on the host as a process named name, with env added to
// this process's environment (proxy variables are dropped unless env sets
// them: the host's own are its business).
func (f *Fenced) Start(name, bin, logDir string, env []string, args ...string) (*proc.Process, error) {
	path, argv := f.h.command(bin, args)
	var base []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasSuffix(strings.ToLower(k), "_proxy") {
			base = append(base, kv)
		}
	}
	return proc.Start(name, path, logDir, append(base, env...), argv...)
}

// Close removes the host.
func (f *Fenced) Close() error { return f.h.close() }

// Proxy is a real forward proxy (Debian's squid) on this machine that
// allows HTTP CONNECT only to the host names it was given, which it alone
// resolves: as a customer's egress proxy, the one way out.
type Proxy struct {
	URL       string // http://IP:PORT
	AccessLog string // squid's access.log: one line per tunnel
	p         *proc.Process
	dir       string
}

// StartProxy starts squid listening on ip, resolving each of hosts (name
// to address) from a file of its own, allowing CONNECT to them alone. Its
// configuration and logs are in a folder of its own, which Stop removes.
func StartProxy(ip string, hosts map[string]string) (*Proxy, error) {
	squid, err := exec.LookPath("squid")
	if err != nil {
		if squid, err = exec.LookPath("/usr/sbin/squid"); err != nil {
			return nil, fmt.Errorf("stack: the proxy test needs squid (apt-get install squid): %w", err)
		}
	}
	// squid drops to its own user, which must reach and write this
	// folder: not one under a test's private temporary folder.
	dir, err := os.MkdirTemp("", "tether-squid-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return nil, err
	}
	ports, err := proc.FreePorts(1)
	if err != nil {
		return nil, err
	}
	var hostsFile, names strings.Builder
	for name, addr := range hosts {
		fmt.Fprintf(&hostsFile, "%s %s\n", addr, name)
		names.WriteString(" " + name)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hostsFile.String()), 0o644); err != nil {
		return nil, err
	}
	listen := net.JoinHostPort(ip, strconv.Itoa(ports[0]))
	conf := fmt.Sprintf(`http_port %s
pid_filename %[2]s/squid.pid
access_log stdio:%[2]s/access.log
cache_log %[2]s/cache.log
cache_store_log none
coredump_dir %[2]s
hosts_file %[2]s/hosts
cache deny all
shutdown_lifetime 1 seconds
acl tunnel method CONNECT
acl allowed dstdomain%[3]s
http_access allow tunnel allowed
http_access deny all
`, listen, dir, names.String())
	confPath := filepath.Join(dir, "squid.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, err := proc.Start("squid", squid, dir, nil, "-N", "-f", confPath)
	if err != nil {
		return nil, err
	}
	px := &Proxy{URL: "http://" + listen, AccessLog: filepath.Join(dir, "access.log"), p: p, dir: dir}
	// Ready when it accepts connections.
	if err := poll(context.Background(), p, 30*time.Second, func() bool {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}); err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, err
	}
	return px, nil
}

// Stop ends squid and removes its folder.
func (p *Proxy) Stop() error {
	err := p.p.Stop(5 * time.Second)
	return errors.Join(err, os.RemoveAll(p.dir))
}
