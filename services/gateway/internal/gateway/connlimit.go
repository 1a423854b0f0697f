package gateway

import (
	"net"
	"sync"
)

// LimitConnections bounds the client connections the gateway holds, in
// all (max) and from one IP address (perIP); zero means no bound. A
// connection over a bound is closed as soon as it is accepted, before its
// TLS handshake, and counted in tether_gateway_refusals_total{reason=
// "connections"}: there is no request yet to answer with a Status.
func (g *Gateway) LimitConnections(ln net.Listener, max, perIP int) net.Listener {
	if max <= 0 && perIP <= 0 {
		return ln
	}
	return &limitedListener{Listener: ln, g: g, max: max, perIP: perIP, byIP: map[string]int{}}
}

type limitedListener struct {
	net.Listener
	g          *Gateway
	max, perIP int

	mu    sync.Mutex
	total int
	byIP  map[string]int
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if !l.acquire(ip) {
			_ = c.Close()
			l.g.refusals.WithLabelValues("connections").Inc()
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func remoteIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

func (l *limitedListener) acquire(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.max > 0 && l.total >= l.max) || (l.perIP > 0 && l.byIP[ip] >= l.perIP) {
		return false
	}
	l.total++
	l.byIP[ip]++
	return true
}

func (l *limitedListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// limitedConn gives its slot back once, however often it is closed (the
// HTTP server and a hijacking handler may both close it).
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
