// Command devidp is the development stack's OpenID Connect provider
// (dev/idp): `make run` starts it so kubectl logs in through `tetherctl
// login` as a demo user. Development only: it has no passwords.
//
//	devidp --listen 127.0.0.1:PORT --issuer https://127.0.0.1:PORT --tls-cert F --tls-key F \
//	  --users users.json --client-id tether --key-dir DIR
//	devidp approve --ca-file CA URL
//
// SIGHUP rotates the signing key. `approve` stands in for a browser: it
// follows an authorization URL that carries a login_hint to its loopback
// redirect, which completes a `tetherctl login` without a person.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tether-dev/tether/dev/idp"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "approve" {
		if err := approve(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "devidp approve: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := serve(); err != nil {
		fmt.Fprintf(os.Stderr, "devidp: %v\n", err)
		os.Exit(1)
	}
}

func serve() error {
	var (
		listen, certFile, keyFile, usersFile, clients string
		cfg                                           idp.Config
	)
	flag.StringVar(&listen, "listen", "127.0.0.1:8444", "HTTPS address")
	flag.StringVar(&cfg.Issuer, "issuer", "", "issuer URL as tokens carry it (https://HOST:PORT)")
	flag.StringVar(&certFile, "tls-cert", "", "serving certificate (PEM)")
	flag.StringVar(&keyFile, "tls-key", "", "serving key (PEM)")
	flag.StringVar(&usersFile, "users", "", `users, JSON: [{"name":"alice","email":"…","groups":["…"],"tenants":["acme"]}]`)
	flag.StringVar(&clients, "client-id", "tether", "client ids allowed, comma-separated")
	flag.StringVar(&cfg.KeyDir, "key-dir", "", "folder keeping the signing keys")
	flag.DurationVar(&cfg.TokenTTL, "token-ttl", 10*time.Minute, "ID token lifetime")
	flag.Parse()
	b, err := os.ReadFile(usersFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &cfg.Users); err != nil {
		return fmt.Errorf("parsing %s: %w", usersFile, err)
	}
	cfg.Clients = strings.Split(clients, ",")
	p, err := idp.New(cfg)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	srv := &http.Server{Addr: listen, Handler: p.Handler(), ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := p.Rotate(); err != nil {
				log.Error("rotating the signing key", "err", err)
				continue
			}
			log.Info("signing key rotated")
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("development identity provider serving", "issuer", cfg.Issuer, "users", len(cfg.Users))
	if err := srv.ListenAndServeTLS(certFile, keyFile); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func approve(args []string) error {
	fs := flag.NewFlagSet("approve", flag.ContinueOnError)
	caFile := fs.String("ca-file", "", "CA of the provider's certificate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: devidp approve --ca-file CA URL")
	}
	pool := x509.NewCertPool()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		pool.AppendCertsFromPEM(pem)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(fs.Arg(0))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	return nil
}
