// Command podtool is what test pods on the development node run, and what
// the node runs in place of an image it cannot run.
//
//	podtool echo --port N    TCP echo server on $POD_IP:N; each connection is
//	                         echoed until the client's end, then half-closed
//	podtool standin --image IMAGE [--ports 80,443]
//	                         stands in for a container that names only an
//	                         image: says so on stdout, answers HTTP on each
//	                         port at $POD_IP with the same words, and sleeps
//	                         until SIGTERM
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "echo":
		err = echo(os.Args[2:])
	case "standin":
		err = standIn(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: podtool echo --port N | podtool standin --image IMAGE [--ports P,...]")
	os.Exit(2)
}

// podIP is where a pod's servers listen: its own loopback address.
func podIP() string {
	if ip := os.Getenv("POD_IP"); ip != "" {
		return ip
	}
	return "127.0.0.1"
}

func echo(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	port := fs.Int("port", 8080, "port to listen on, at $POD_IP")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", net.JoinHostPort(podIP(), strconv.Itoa(*port)))
	if err != nil {
		return err
	}
	fmt.Println("echoing on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
	}
}

func standIn(args []string) error {
	fs := flag.NewFlagSet("standin", flag.ExitOnError)
	image := fs.String("image", "", "the image this process stands in for")
	ports := fs.String("ports", "", "comma-separated TCP ports the container declares")
	_ = fs.Parse(args)
	say := fmt.Sprintf("tether development node: a stand-in for image %q. The node runs containers as host processes, "+
		"not images, and this container names no command, so the node runs this instead: it serves the container's "+
		"declared ports and sleeps. Give the container a command to run a program of this machine.\n", *image)
	fmt.Print(say)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = io.WriteString(w, say)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	for _, p := range strings.Split(*ports, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(podIP(), p))
		if err != nil {
			// One port another process holds does not stop the others.
			fmt.Fprintf(os.Stderr, "stand-in: cannot serve port %s: %v\n", p, err)
			continue
		}
		fmt.Println("stand-in: serving HTTP on", ln.Addr())
		go func() { _ = srv.Serve(ln) }()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	return srv.Close()
}
