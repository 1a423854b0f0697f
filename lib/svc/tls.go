package svc

import (
	"crypto/tls"
	"errors"
	"flag"
)

// ServingCert is a public endpoint's certificate and key on disk (the
// gateway's for clients, the subscriber's for agents), read again when the
// files change, so cert-manager or an operator can rotate them without a
// restart.
type ServingCert struct {
	CertFile, KeyFile string

	pair *keyPair
}

// Register adds --tls-cert and --tls-key to fs.
func (c *ServingCert) Register(fs *flag.FlagSet, what string) {
	fs.StringVar(&c.CertFile, "tls-cert", "", "certificate served to "+what+" (PEM, with its chain; reloaded when it changes)")
	fs.StringVar(&c.KeyFile, "tls-key", "", "its key (PEM)")
}

// Enabled reports whether a certificate was given.
func (c *ServingCert) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Config is the server's TLS configuration: TLS 1.2 or later, HTTP/2
// offered first by ALPN (streams need it), HTTP/1.1 for everything else. It
// fails at once when the files cannot be loaded, so a bad Secret stops the
// service at start rather than at the first handshake.
func (c *ServingCert) Config() (*tls.Config, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if c.pair == nil {
		c.pair = &keyPair{certFile: c.CertFile, keyFile: c.KeyFile}
	}
	if _, err := c.pair.get(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.pair.get()
		},
	}, nil
}
