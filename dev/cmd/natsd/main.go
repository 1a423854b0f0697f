// Command natsd runs an embedded NATS server with JetStream, as its own
// process, for the development stack and tests: no Docker, no download.
//
//	natsd --port 4222 --store-dir .state/nats
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	var (
		host     string
		port     int
		storeDir string
		js       bool
	)
	flag.StringVar(&host, "host", "127.0.0.1", "address to listen on")
	flag.IntVar(&port, "port", 4222, "client port")
	flag.StringVar(&storeDir, "store-dir", "", "JetStream storage folder (required with --jetstream)")
	flag.BoolVar(&js, "jetstream", true, "enable JetStream")
	flag.Parse()

	opts := &server.Options{
		ServerName: "tether-dev-nats",
		Host:       host,
		Port:       port,
		JetStream:  js,
		StoreDir:   storeDir,
		// Frames are at most 256 KiB; leave room for headers.
		MaxPayload: 1 << 20,
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
	fmt.Fprintf(os.Stderr, "natsd: ready on %s (jetstream=%v)\n", ns.ClientURL(), js)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	// Shutdown flushes JetStream to disk; clients reconnect with backoff.
	ns.Shutdown()
	ns.WaitForShutdown()
}
