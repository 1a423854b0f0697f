// Package compose makes what docker-compose.yml's stack mounts: two CAs
// (Kubernetes' and Tether's internal one) with a certificate for each
// container under its compose service name, the tokens and kubeconfigs of
// the control plane and of the gateway's users, the NATS users and the key
// agent credentials are signed with. Its one-shot container runs
// `tether-dev pki`, which calls Write.
package compose

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tether-dev/tether/dev/pki"
	"github.com/tether-dev/tether/dev/stack"
	"github.com/tether-dev/tether/lib/agentcred"
)

// Names of the compose services, which are also their host names on the
// stack's network and the names in their certificates.
var (
	NATSNodes   = []string{"nats-0", "nats-1", "nats-2"}
	Subscribers = []string{"subscriber-0", "subscriber-1"}
)

// APIServer is where the containers reach the kube-apiserver.
const APIServer = "https://kube-apiserver:6443"

// complete marks a state folder Write finished: a second `docker compose
// up` keeps it, since etcd's data, the agent's credential and the NATS
// streams were made with these keys.
const complete = ".complete"

// Options say where Write puts things and who may read them.
type Options struct {
	// Dir is the volume every container mounts (read-only) at /etc/tether.
	Dir string
	// HostDir is a folder of the user's machine (a bind mount) where the
	// users' kubeconfigs go, for GatewayURL.
	HostDir    string
	GatewayURL string
	// UID and GID own what Write makes, and DataDirs (the volumes of etcd,
	// NATS and the agent): the images run as that unprivileged user.
	UID, GID int
	DataDirs []string
}

func (o Options) validate() error {
	switch {
	case o.Dir == "" || o.HostDir == "":
		return errors.New("the state and host folders are required")
	case !strings.HasPrefix(o.GatewayURL, "https://"):
		return fmt.Errorf("gateway URL %q is not https://", o.GatewayURL)
	case o.UID < 0 || o.GID < 0:
		return errors.New("owner ids must not be negative")
	}
	return nil
}

// Write makes the stack's state in o.Dir unless an earlier run finished it,
// gives it and o.DataDirs to o.UID:o.GID, and copies the users'
// kubeconfigs to o.HostDir, owned by whoever owns o.HostDir's parent (the
// user who ran `make images`, not root).
func Write(o Options) error {
	if err := o.validate(); err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	if _, err := os.Stat(filepath.Join(o.Dir, complete)); errors.Is(err, fs.ErrNotExist) {
		if err := writeState(o); err != nil {
			return fmt.Errorf("compose: making the stack's state in %s: %w", o.Dir, err)
		}
	} else if err != nil {
		return fmt.Errorf("compose: %w", err)
	}
	for _, d := range append([]string{o.Dir}, o.DataDirs...) {
		if err := chownAll(d, o.UID, o.GID); err != nil {
			return fmt.Errorf("compose: giving %s to %d:%d: %w", d, o.UID, o.GID, err)
		}
	}
	if err := copyKubeconfigs(o); err != nil {
		return fmt.Errorf("compose: writing the users' kubeconfigs to %s: %w", o.HostDir, err)
	}
	return nil
}

func writeState(o Options) error {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	if err := writeKube(filepath.Join(o.Dir, "kube")); err != nil {
		return err
	}
	ca, err := pki.NewCA(o.Dir, "ca")
	if err != nil {
		return err
	}
	// Each service's certificate serves and calls (mTLS); the NATS nodes
	// share one, which also authenticates the routes between them.
	services := map[string][]string{
		"nats": NATSNodes, "agent-registry": nil, "subscriber": nil, "router": nil,
		"gateway": {"localhost", "127.0.0.1"},
	}
	for name, hosts := range services {
		if _, _, err := ca.IssueService(o.Dir, name, hosts); err != nil {
			return err
		}
	}
	// The agents' endpoint, which is public in production.
	if _, _, err := ca.IssueServer(o.Dir, "subscriber-agents", Subscribers); err != nil {
		return err
	}
	if err := agentcred.WriteKeyPair(filepath.Join(o.Dir, "agent-signing.key"), filepath.Join(o.Dir, "agent-signing.pub")); err != nil {
		return err
	}
	if _, err := pki.WriteIdentityKeys(o.Dir); err != nil {
		return err
	}
	if _, err := stack.WriteNATSUsers(filepath.Join(o.Dir, "nats-users"), stack.NATSUsers(nil)); err != nil {
		return err
	}
	if err := writeUsers(o); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(o.Dir, complete), nil, 0o644)
}

// writeKube makes the control plane's keys: its CA (whose key the
// controller manager signs CSRs with), the kube-apiserver's serving and
// client certificates, etcd's, the ServiceAccount key and one admin token,
// which the controller manager, the development node and the agent use
// through dir/kubeconfig.
func writeKube(dir string) error {
	ca, err := pki.NewCA(dir, "ca")
	if err != nil {
		return err
	}
	issue := []func() error{
		func() error {
			// 127.0.0.1: the development node shares the kube-apiserver's
			// network namespace; 10.96.0.1: the kubernetes Service.
			_, _, err := ca.IssueServer(dir, "apiserver", []string{"kube-apiserver", "localhost", "127.0.0.1", "10.96.0.1", "kubernetes.default.svc"})
			return err
		},
		func() error {
			_, _, err := ca.IssueClient(dir, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"tether-dev"})
			return err
		},
		func() error {
			// etcd calls its own client endpoint with it too (its gRPC
			// gateway): a client certificate as well.
			_, _, err := ca.IssueService(dir, "etcd", []string{"localhost", "127.0.0.1"})
			return err
		},
		func() error {
			_, _, err := ca.IssueClient(dir, "apiserver-etcd-client", "kube-apiserver-etcd-client", nil)
			return err
		},
		func() error { _, _, err := ca.IssueServer(dir, "devnode", []string{"127.0.0.1"}); return err },
		func() error { return pki.WriteRSAKey(filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")) },
	}
	for _, f := range issue {
		if err := f(); err != nil {
			return err
		}
	}
	token := rand.Text()
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	return writeKubeconfig(filepath.Join(dir, "kubeconfig"), APIServer, "/etc/tether/kube/ca.crt", nil, "admin", token)
}

// writeUsers writes the gateway's tokens.csv, admin's token on its own for
// the one-shot that creates the first cluster, and a kubeconfig for each
// user to dir/host, which Write copies to the user's machine.
func writeUsers(o Options) error {
	caPEM, err := os.ReadFile(filepath.Join(o.Dir, "ca.crt"))
	if err != nil {
		return err
	}
	host := filepath.Join(o.Dir, "host")
	if err := os.MkdirAll(host, 0o755); err != nil {
		return err
	}
	var csv strings.Builder
	csv.WriteString("# token,user,uid,groups,tenants\n")
	for _, u := range stack.DefaultUsers() {
		token := u.Name + "-" + rand.Text()
		fmt.Fprintf(&csv, "%s,%s,%s,%q,%q\n", token, u.Name, "uid-"+u.Name, strings.Join(u.Groups, ","), strings.Join(u.Tenants, ","))
		if u.Name == "admin" {
			if err := os.WriteFile(filepath.Join(o.Dir, "admin-token"), []byte(token), 0o600); err != nil {
				return err
			}
		}
		server := strings.TrimSuffix(o.GatewayURL, "/") + "/clusters/" + stack.ClusterID
		if err := writeKubeconfig(filepath.Join(host, "kubeconfig-"+u.Name), server, "", caPEM, u.Name, token); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(o.Dir, "tokens.csv"), []byte(csv.String()), 0o600)
}

// writeKubeconfig writes a kubeconfig for server that trusts caFile, or
// caPEM inline (for a file that must stand alone on another machine).
func writeKubeconfig(path, server, caFile string, caPEM []byte, user, token string) error {
	cluster := map[string]any{"server": server}
	if caFile != "" {
		cluster["certificate-authority"] = caFile
	} else {
		cluster["certificate-authority-data"] = caPEM // []byte encodes as base64
	}
	kc := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "tether",
		"clusters": []any{map[string]any{"name": "tether", "cluster": cluster}},
		"users":    []any{map[string]any{"name": user, "user": map[string]any{"token": token}}},
		"contexts": []any{map[string]any{"name": "tether", "context": map[string]any{"cluster": "tether", "user": user}}},
	}
	b, err := json.MarshalIndent(kc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

func chownAll(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

// copyKubeconfigs copies dir/host/* to o.HostDir. A folder docker made for
// a bind mount belongs to root, so the files (and the folder) go to the
// owner of its parent, who can then read them without sudo.
func copyKubeconfigs(o Options) error {
	if err := os.MkdirAll(o.HostDir, 0o755); err != nil {
		return err
	}
	uid, gid := -1, -1
	if fi, err := os.Stat(filepath.Dir(filepath.Clean(o.HostDir))); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	if err := os.Chown(o.HostDir, uid, gid); err != nil {
		return err
	}
	src := filepath.Join(o.Dir, "host")
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		dst := filepath.Join(o.HostDir, e.Name())
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			return err
		}
		if err := os.Chown(dst, uid, gid); err != nil {
			return err
		}
	}
	return nil
}
