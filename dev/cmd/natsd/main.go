// Command natsd runs an embedded NATS server with JetStream, as its own
// process, for the development stack and tests: no Docker, no download.
//
//	natsd --port 4222 --store-dir .state/nats [--auth users.json] [--tls-cert F --tls-key F]
//
// Three of them make a cluster, JetStream replicating streams across it:
//
//	natsd --server-name n0 --port 4222 --cluster-port 6222 --routes 127.0.0.1:6223,127.0.0.1:6224 ...
//
// With --tls-cert and --cluster-ca, the nodes speak mutual TLS to each
// other too.
//
// With --auth, every client must log in as one of the users in the file,
// each allowed to publish and subscribe only to its subjects:
//
//	{"users": [{"user": "router-0", "password": "$2a$10$…",
//	  "publish": ["tether.req.*"], "subscribe": ["tether.rtr.router-0.>"], "responses": true}]}
//
// A password is a bcrypt hash (dev/stack NATSAuth): a plaintext one is
// refused, so the file never holds what a client logs in with. An empty
// list allows nothing; "responses" lets the user answer requests sent to
// it, whatever their reply subject.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"
)

func main() {
	var (
		host      string
		port      int
		storeDir  string
		js        bool
		authFile  string
		tlsCert   string
		tlsKey    string
		name      string
		cport     int
		cname     string
		routes    string
		clusterCA string
		ping      time.Duration
		httpPort  int
	)
	flag.StringVar(&host, "host", "127.0.0.1", "address to listen on")
	flag.IntVar(&port, "port", 4222, "client port")
	flag.StringVar(&storeDir, "store-dir", "", "JetStream storage folder (required with --jetstream)")
	flag.BoolVar(&js, "jetstream", true, "enable JetStream")
	flag.StringVar(&authFile, "auth", "", "users and their subject permissions (JSON); empty: no authentication")
	flag.StringVar(&tlsCert, "tls-cert", "", "serving certificate (PEM): clients must use TLS")
	flag.StringVar(&tlsKey, "tls-key", "", "serving key (PEM)")
	flag.StringVar(&name, "server-name", "tether-dev-nats", "this server's name, unique in a cluster")
	flag.IntVar(&cport, "cluster-port", 0, "port other nodes of the cluster connect to; 0: no cluster")
	flag.StringVar(&cname, "cluster-name", "tether", "the cluster's name")
	flag.StringVar(&routes, "routes", "", "the other nodes' cluster addresses (host:port), comma-separated")
	flag.StringVar(&clusterCA, "cluster-ca", "", "CA of the other nodes' certificates: the nodes speak mutual TLS (with --tls-cert)")
	flag.IntVar(&httpPort, "http-port", 0, "port of NATS' own monitoring endpoints (/varz, /connz, /routez, /jsz) on --host; 0: none")
	flag.DurationVar(&ping, "ping-interval", 2*time.Second, "ping clients after this long without traffic; two unanswered pings close the connection, so a client cut off loses its subscriptions (and its share of requests) within three of these")
	flag.Parse()

	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  js,
		StoreDir:   storeDir,
		// Frames are at most 256 KiB; leave room for headers.
		MaxPayload:   1 << 20,
		PingInterval: ping,
		MaxPingsOut:  2,
		HTTPHost:     host,
		HTTPPort:     httpPort,
	}
	if cport != 0 {
		opts.Cluster = server.ClusterOpts{Name: cname, Host: host, Port: cport}
		for _, r := range strings.Split(routes, ",") {
			if r = strings.TrimSpace(r); r == "" {
				continue
			}
			u, err := url.Parse("nats-route://" + r)
			if err != nil {
				fmt.Fprintf(os.Stderr, "natsd: route %q: %v\n", r, err)
				os.Exit(1)
			}
			opts.Routes = append(opts.Routes, u)
		}
		if clusterCA != "" {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: tlsCert, KeyFile: tlsKey, CaFile: clusterCA, Verify: true})
			if err != nil {
				fmt.Fprintf(os.Stderr, "natsd: cluster TLS: %v\n", err)
				os.Exit(1)
			}
			// Each node is the others' client too: it checks the nodes it
			// dials against the same CA (nats-server's own configuration
			// parser does the same).
			tc.RootCAs = tc.ClientCAs
			opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = tc, 5
		}
	}
	if authFile != "" {
		users, err := loadUsers(authFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "natsd: %v\n", err)
			os.Exit(1)
		}
		opts.Users = users
	}
	if tlsCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: tlsCert, KeyFile: tlsKey})
		if err != nil {
			fmt.Fprintf(os.Stderr, "natsd: %v\n", err)
			os.Exit(1)
		}
		opts.TLSConfig, opts.TLS, opts.TLSTimeout = tc, true, 5
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "natsd: %v\n", err)
		os.Exit(1)
	}
	ns.ConfigureLogger()
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		fmt.Fprintln(os.Stderr, "natsd: not ready after 30s")
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "natsd: %s ready on %s (jetstream=%v, cluster port %d, routes %d)\n", name, ns.ClientURL(), js, cport, len(opts.Routes))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	// Shutdown flushes JetStream to disk; clients reconnect with backoff.
	ns.Shutdown()
	ns.WaitForShutdown()
}

// authFile is the --auth file.
type authFile struct {
	Users []struct {
		User      string   `json:"user"`
		Password  string   `json:"password"`
		Publish   []string `json:"publish"`
		Subscribe []string `json:"subscribe"`
		Responses bool     `json:"responses"`
	} `json:"users"`
}

func loadUsers(path string) ([]*server.User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	var f authFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	users := make([]*server.User, 0, len(f.Users))
	for _, u := range f.Users {
		if u.User == "" || u.Password == "" {
			return nil, fmt.Errorf("%s: every user needs a name and a password", path)
		}
		if _, err := bcrypt.Cost([]byte(u.Password)); err != nil {
			return nil, fmt.Errorf("%s: %s's password is no bcrypt hash: the file must not hold plaintext passwords", path, u.User)
		}
		p := &server.Permissions{Publish: subjects(u.Publish), Subscribe: subjects(u.Subscribe)}
		if u.Responses {
			p.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
		}
		users = append(users, &server.User{Username: u.User, Password: u.Password, Permissions: p})
	}
	return users, nil
}

// subjects allows exactly these subjects; none at all when empty, where
// NATS would read an empty allow list as everything.
func subjects(allow []string) *server.SubjectPermission {
	if len(allow) == 0 {
		return &server.SubjectPermission{Deny: []string{">"}}
	}
	return &server.SubjectPermission{Allow: allow}
}
