package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// target is one way to reach the cluster: straight to the kube-apiserver or
// through Tether. Each has its own client, with HTTP/2 as kubectl uses.
type target struct {
	name  string
	base  string // URL prefix the Kubernetes path is appended to
	token string // "": no Authorization (a client certificate says who)
	// header goes with every GET: whom the request names (identitymode.go).
	header http.Header
	client *http.Client
}

func newClient(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no certificate in " + caFile)
	}
	return &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			Proxy:               nil, // loopback only
			TLSClientConfig:     &tls.Config{RootCAs: pool},
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 256,
		},
	}, nil
}

// get sends a GET for path and reads the whole body. It fails unless the
// answer is 200 OK.
func (t *target) get(ctx context.Context, path string, hdr map[string]string) (int64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+path, nil)
	if err != nil {
		return 0, "", err
	}
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range t.header {
		req.Header[k] = v
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, resp.Proto, fmt.Errorf("%s: reading body after %d bytes: %w", t.name, n, err)
	}
	if resp.StatusCode != http.StatusOK {
		return n, resp.Proto, fmt.Errorf("%s: GET %s: %s", t.name, path, resp.Status)
	}
	return n, resp.Proto, nil
}

// send sends a request with a JSON body and returns the status and body.
func (t *target) send(ctx context.Context, method, path, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, t.base+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// sequential sends n GETs one after the other.
func sequential(ctx context.Context, t *target, path string, n int) samples {
	var s samples
	for i := 0; i < n && ctx.Err() == nil; i++ {
		start := time.Now()
		_, _, err := t.get(ctx, path, nil)
		s.add(time.Since(start), err)
	}
	return s
}

// throughput is the result of a fixed-duration concurrent phase.
type throughput struct {
	lat     samples
	elapsed time.Duration
}

func (r throughput) rps() float64 { return float64(len(r.lat.d)) / r.elapsed.Seconds() }

// concurrent runs workers loops of GETs for d.
func concurrent(ctx context.Context, t *target, path string, workers int, d time.Duration) throughput {
	per := make([]samples, workers)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t0 := time.Now()
				_, _, err := t.get(ctx, path, nil)
				per[w].add(time.Since(t0), err)
			}
		}()
	}
	wg.Wait()
	r := throughput{elapsed: time.Since(start)}
	for _, s := range per {
		r.lat.merge(s)
	}
	return r
}
