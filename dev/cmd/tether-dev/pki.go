package main

import (
	"flag"
	"strings"

	"github.com/tether-dev/tether/dev/compose"
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
