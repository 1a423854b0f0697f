// Package echo checks a byte stream against an echo server (podtool echo
// in a pod on the development node): what comes back must be exactly what
// went out.
package echo

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
)

// RoundTrip sends n random bytes on conn while reading the echo, then
// half-closes conn and waits for the echo's end. It fails unless the same
// n bytes came back.
func RoundTrip(conn *net.TCPConn, n int64) error {
	sent, got := sha256.New(), sha256.New()
	wrote := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.MultiWriter(conn, sent), rand.Reader, n)
		if err == nil {
			err = conn.CloseWrite()
		}
		wrote <- err
	}()
	m, rerr := io.Copy(got, conn)
	if err := errors.Join(<-wrote, rerr); err != nil {
		return fmt.Errorf("echo after %d bytes back: %w", m, err)
	}
	if m != n || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		return fmt.Errorf("sent %d bytes, %d came back, checksums equal: %v", n, m, bytes.Equal(sent.Sum(nil), got.Sum(nil)))
	}
	return nil
}
