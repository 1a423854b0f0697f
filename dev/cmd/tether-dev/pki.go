package main

import (
	"context"
	"flag"
	"strings"
	"time"

	"github.com/tether-dev/tether/dev/compose"
	"github.com/tether-dev/tether/dev/stack"
)

// composePKI is docker-compose.yml's one-shot: it makes the stack's certificates,
// tokens and NATS users in a volume (once), gives them and the data
// volumes to the images' user, and writes the users' kubeconfigs to a
// folder of the host.
//
//	tether-dev pki --out /etc/tether --host-dir /host-state/compose \
//	  --gateway-url https://127.0.0.1:18443 --data /data/etcd,/data/nats-0
func composePKI(args []string) error {
	fs := flag.NewFlagSet("pki", flag.ContinueOnError)
	var o compose.Options
	var data string
	fs.StringVar(&o.Dir, "out", "/etc/tether", "folder (a volume) for the stack's certificates, keys and tokens; kept if an earlier run finished it")
	fs.StringVar(&o.HostDir, "host-dir", "", "folder (bind-mounted from the host) for the users' kubeconfigs")
	fs.StringVar(&o.GatewayURL, "gateway-url", "https://127.0.0.1:18443", "where the user's kubectl reaches the gateway")
	fs.IntVar(&o.UID, "uid", 65532, "user that owns what this writes: the images' user")
	fs.IntVar(&o.GID, "gid", 65532, "its group")
	fs.StringVar(&data, "data", "", "data folders (volumes) to give to --uid, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if data != "" {
		o.DataDirs = strings.Split(data, ",")
	}
	return compose.Write(o)
}

// bindAdmins binds stack.ClusterAdmins to cluster-admin in the compose
// stack's cluster, once its kube-apiserver answers: Tether's admin user is
// in that group, not in system:masters, which agents refuse.
func bindAdmins(args []string) error {
	fs := flag.NewFlagSet("bind-admins", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "/etc/tether/kube/kubeconfig", "the cluster's administrator kubeconfig")
	wait := fs.Duration("wait", 3*time.Minute, "how long to wait for the kube-apiserver")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	for {
		err := stack.BindClusterAdmins(ctx, *kubeconfig)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(2 * time.Second):
		}
	}
}
