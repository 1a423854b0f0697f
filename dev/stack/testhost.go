package stack

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/tether-dev/tether/dev/proc"
)

// testHost is a network namespace with an address of its own, joined to
// this machine by a veth pair: a second machine, for the services that run
// in it, which Partition can cut off from NATS while everything else still
// reaches them. Making one needs root (CAP_NET_ADMIN), iproute2 and
// iptables.
type testHost struct {
	name   string
	hostIP string // this machine's end of the pair
	ip     string // the test host's
	veth   string // this machine's end
}

func newTestHost() (*testHost, error) {
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("stack: a test host needs %s (iproute2, iptables) and root: %w", tool, err)
		}
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	// A /30 of 10.128.0.0/9 by chance, so two stacks on one machine
	// (parallel test packages) do not meet.
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<21))
	base := 10<<24 | 1<<23 | int(n.Int64())<<2
	ip4 := func(v int) string { return fmt.Sprintf("%d.%d.%d.%d", v>>24&255, v>>16&255, v>>8&255, v&255) }
	h := &testHost{name: "tether-" + id, hostIP: ip4(base + 1), ip: ip4(base + 2), veth: "th" + id + "h"}
	peer := "th" + id + "p"
	steps := [][]string{
		{"ip", "netns", "add", h.name},
		{"ip", "link", "add", h.veth, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", h.name},
		{"ip", "addr", "add", h.hostIP + "/30", "dev", h.veth},
		{"ip", "link", "set", h.veth, "up"},
		{"ip", "netns", "exec", h.name, "ip", "addr", "add", h.ip + "/30", "dev", peer},
		{"ip", "netns", "exec", h.name, "ip", "link", "set", peer, "up"},
		{"ip", "netns", "exec", h.name, "ip", "link", "set", "lo", "up"},
	}
	for _, step := range steps {
		if err := run(step...); err != nil {
			_ = h.close()
			return nil, err
		}
	}
	return h, nil
}

// command is how to run bin with args on the test host.
func (h *testHost) command(bin string, args []string) (string, []string) {
	ip, _ := exec.LookPath("ip")
	return ip, append([]string{"netns", "exec", h.name, bin}, args...)
}

// cut drops, or lets through again, all traffic between the test host and
// this machine's ports: silently, as a partition does, with no reset or
// error for either side to notice.
func (h *testHost) cut(ports []int, on bool) error {
	op := "-A"
	if !on {
		op = "-D"
	}
	for _, p := range ports {
		port := strconv.Itoa(p)
		for _, rule := range [][]string{
			{"OUTPUT", "-p", "tcp", "-d", h.hostIP, "--dport", port, "-j", "DROP"},
			{"INPUT", "-p", "tcp", "-s", h.hostIP, "--sport", port, "-j", "DROP"},
		} {
			if err := run(append([]string{"ip", "netns", "exec", h.name, "iptables", "-w", op}, rule...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// close removes the namespace; its end of the veth pair goes with it, and
// so does ours.
func (h *testHost) close() error {
	_ = run("ip", "link", "del", h.veth)
	return run("ip", "netns", "del", h.name)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("stack: %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// subscriberAt is where subscriber i listens: on loopback, or on the test
// host.
type subscriberAt struct {
	name, listen, admin, url string
}

func (s *Stack) subscriberAt(i int) (subscriberAt, error) {
	ports, err := proc.FreePorts(2)
	if err != nil {
		return subscriberAt{}, err
	}
	name := replicaName("subscriber", i)
	ip := "127.0.0.1"
	if s.onTestHost(name) {
		ip = s.host.ip
	}
	listen := net.JoinHostPort(ip, strconv.Itoa(ports[0]))
	return subscriberAt{name: name, listen: listen, admin: net.JoinHostPort(ip, strconv.Itoa(ports[1])), url: "https://" + listen}, nil
}

func (s *Stack) onTestHost(name string) bool {
	return s.host != nil && slices.Contains(s.opts.TestHost, name)
}

// Partition cuts service, which runs on the test host, off from every NATS
// node (on), or lets it through again (off). Nothing else it talks to is
// cut: agents still reach it.
func (s *Stack) Partition(service string, on bool) error {
	if !s.onTestHost(service) {
		return fmt.Errorf("stack: %s does not run on the test host", service)
	}
	return s.host.cut(s.natsPorts, on)
}
