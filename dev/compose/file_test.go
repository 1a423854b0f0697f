package compose

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/tether-dev/tether/dev/stack"
)

// docker-compose.yml as `docker compose` reads it (compose-go is its
// loader), whether or not this machine has the plugin, and as every
// compose binary here reads it (docker-compose 1.29 on Debian): what the
// stack promises holds in the file itself.
func TestComposeFile(t *testing.T) {
	root, err := stack.RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "docker-compose.yml")
	for _, cmd := range [][]string{{"docker", "compose"}, {"docker-compose"}} {
		if exec.Command(cmd[0], append(cmd[1:], "version")...).Run() != nil {
			continue
		}
		if out, err := exec.Command(cmd[0], append(cmd[1:], "-f", path, "-p", "tether", "config", "-q")...).CombinedOutput(); err != nil {
			t.Errorf("%s config refuses docker-compose.yml: %v\n%s", strings.Join(cmd, " "), err, out)
		}
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir: root, ConfigFiles: []types.ConfigFile{{Filename: path}}, Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("tether", true) })
	if err != nil {
		t.Fatalf("docker compose's loader refuses docker-compose.yml: %v", err)
	}

	// Every part of the stack, and nothing from an image registry.
	want := []string{"pki", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-net", "devnode", "agent-registry", "router",
		"gateway", "audit", "autoscaler", "clusters", "agent", "kube-rbac"}
	want = append(append(want, NATSNodes...), Subscribers...)
	var got []string
	for name, s := range p.Services {
		got = append(got, name)
		if !strings.HasPrefix(s.Image, "tether/") || !strings.HasSuffix(s.Image, ":dev") {
			t.Errorf("%s runs %s, not an image make images builds", name, s.Image)
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("services %v, want %v", got, want)
	}

	for name, s := range p.Services {
		args := strings.Join(s.Command, " ")
		// The bridge network by name; the development node shares the
		// kube-apiserver's namespace, so its InternalIP 127.0.0.1 is right.
		if wantMode := map[string]string{"devnode": "service:kube-net", "kube-apiserver": "service:kube-net"}[name]; s.NetworkMode != wantMode {
			t.Errorf("%s: network_mode %q, want %q", name, s.NetworkMode, wantMode)
		}
		// Only the gateway is published, on loopback.
		for _, port := range s.Ports {
			if name != "gateway" || port.HostIP != "127.0.0.1" {
				t.Errorf("%s publishes %s:%s", name, port.HostIP, port.Published)
			}
		}
		if name != "pki" && name != "kube-net" {
			if d, ok := s.DependsOn["pki"]; (!ok || d.Condition != types.ServiceConditionCompletedSuccessfully) && name != "agent" {
				t.Errorf("%s does not wait for the certificates", name)
			}
		}
		// TLS to NATS, as the service's own user, to all three nodes.
		if strings.Contains(args, "--nats-url") {
			for _, flag := range []string{"--nats-url=nats://nats-0:4222,nats://nats-1:4222,nats://nats-2:4222",
				"--nats-user=" + strings.TrimRight(name, "-01"), "--nats-ca-file=/etc/tether/ca.crt"} {
				if !slices.Contains(s.Command, flag) {
					t.Errorf("%s: no %s", name, flag)
				}
			}
		}
	}
	for _, tc := range []struct {
		service string
		flags   []string
	}{
		{"subscriber-0", []string{"--tls-cert=/etc/tether/subscriber-agents.crt", "--mtls-cert=/etc/tether/subscriber.crt"}},
		{"subscriber-1", []string{"--tls-cert=/etc/tether/subscriber-agents.crt", "--mtls-cert=/etc/tether/subscriber.crt"}},
		// The agent trusts only identities the gateway signed (ADR 011).
		{"agent", []string{"--subscriber-url=https://subscriber-0:8081,https://subscriber-1:8081", "--subscriber-ca=/etc/tether/ca.crt",
			"--identity-root-key=/etc/tether/identity-root.pub", "--tenant=acme"}},
		{"gateway", []string{"--tls-cert=/etc/tether/gateway.crt", "--router-url=https://router:8082", "--mtls-ca=/etc/tether/ca.crt",
			"--identity-key=/etc/tether/gateway-identity.key"}},
		{"kube-rbac", []string{"--kubeconfig=/etc/tether/kube/kubeconfig"}},
		{"router", []string{"--mtls-cert=/etc/tether/router.crt"}},
		{"agent-registry", []string{"--mtls-cert=/etc/tether/agent-registry.crt", "--stream-replicas=3"}},
		{"kube-apiserver", []string{"--etcd-servers=https://etcd:2379", "--etcd-certfile=/etc/tether/kube/apiserver-etcd-client.crt"}},
		{"etcd", []string{"--client-cert-auth", "--listen-client-urls=https://0.0.0.0:2379"}},
		{"nats-0", []string{"--cluster-ca=/etc/tether/ca.crt", "--tls-cert=/etc/tether/nats.crt"}},
	} {
		for _, f := range tc.flags {
			if !slices.Contains(p.Services[tc.service].Command, f) {
				t.Errorf("%s: no %s", tc.service, f)
			}
		}
	}
	if d := p.Services["agent"].DependsOn["clusters"]; d.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("the agent does not wait for its bootstrap token")
	}
}
