// Command podtool is what test pods on the development node run.
//
//	podtool echo --port N    TCP echo server on $POD_IP:N; each connection is
//	                         echoed until the client's end, then half-closed
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "echo" {
		fmt.Fprintln(os.Stderr, "usage: podtool echo --port N")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	port := fs.Int("port", 8080, "port to listen on, at $POD_IP")
	_ = fs.Parse(os.Args[2:])
	host := os.Getenv("POD_IP")
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("echoing on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
	}
}
