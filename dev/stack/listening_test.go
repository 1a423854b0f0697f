package stack

import (
	"net"
	"os"
	"testing"
)

// listening sees a port this process listens on, and neither one it
// stopped listening on nor one it only connected to.
func TestListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if !listening(os.Getpid(), port) {
		t.Fatalf("port %d: not seen listening", port)
	}
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if local := c.LocalAddr().(*net.TCPAddr).Port; listening(os.Getpid(), local) {
		t.Fatalf("port %d, a connection's own, seen listening", local)
	}
	l.Close()
	if listening(os.Getpid(), port) {
		t.Fatalf("port %d: seen listening after Close", port)
	}
	if listening(1, port) {
		t.Fatal("another process seen listening on this one's port")
	}
}
