package stack

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ClusterDomain is the base domain under which the stack's gateways name
// clusters by host: https://{id}.tether.localhost:PORT/ (ADR 009). A
// .localhost name is reserved for loopback (RFC 6761) and never leaves
// the machine; browsers and curl resolve it themselves, but Go's resolver
// (kubectl's) asks DNS, so kubectl needs HostsCommand here.
const ClusterDomain = "tether.localhost"

// gatewayHostNames are the gateway certificate's names for host
// addressing: its own and every cluster's.
func gatewayHostNames() []string { return []string{ClusterDomain, "*." + ClusterDomain} }

// ClusterHostURL is where a gateway serves cluster by host name: the
// first gateway's port on {cluster}.tether.localhost.
func (s *Stack) ClusterHostURL(cluster string) string {
	// GatewayURL is the stack's own https://127.0.0.1:PORT.
	port := s.GatewayURL[strings.LastIndexByte(s.GatewayURL, ':')+1:]
	return "https://" + cluster + "." + ClusterDomain + ":" + port
}

// HostKubeconfigFor writes kubeconfig-<name>-by-host, which reaches
// cluster at its host name, with no path in the server URL.
func (s *Stack) HostKubeconfigFor(name, token, cluster string) (string, error) {
	return s.writeKubeconfigAt(name+"-by-host", s.ClusterHostURL(cluster), map[string]any{"token": token})
}

// HostsFile writes a hosts file in which localhost and each cluster's host
// name are 127.0.0.1, for HostsCommand.
func (s *Stack) HostsFile(clusters ...string) (string, error) {
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n::1 localhost\n")
	for _, c := range clusters {
		fmt.Fprintf(&b, "127.0.0.1 %s.%s\n", c, ClusterDomain)
	}
	path := filepath.Join(s.opts.StateDir, "hosts")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("stack: writing the hosts file: %w", err)
	}
	return path, nil
}

// HostsCommand is how to run bin with args so that it resolves names by
// hostsFile instead of /etc/hosts: in a mount namespace of its own
// (util-linux unshare), where hostsFile is bind-mounted over /etc/hosts.
// The machine's /etc/hosts is never touched, and the process keeps this
// machine's network, loopback included. Without root it maps the caller to
// root in a user namespace of its own, which Debian allows by default.
func HostsCommand(hostsFile, bin string, args ...string) (string, []string, error) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return "", nil, fmt.Errorf("stack: resolving cluster host names needs unshare (util-linux): %w", err)
	}
	flags := []string{"--mount", "--propagation", "private"}
	if os.Geteuid() != 0 {
		flags = append(flags, "--map-root-user")
	}
	script := `mount --bind "$0" /etc/hosts && exec "$@"`
	return unshare, append(append(flags, "sh", "-c", script, hostsFile, bin), args...), nil
}
