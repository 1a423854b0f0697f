package driver

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSpikePacer(t *testing.T) {
	p := spikePacer{base: 10, factor: 10, at: 10 * time.Second, until: 20 * time.Second}
	for _, tc := range []struct {
		at   time.Duration
		rate float64
	}{{0, 10}, {9 * time.Second, 10}, {10 * time.Second, 100}, {19 * time.Second, 100}, {20 * time.Second, 10}} {
		if got := p.Rate(tc.at); got != tc.rate {
			t.Errorf("Rate(%v) = %v, want %v", tc.at, got, tc.rate)
		}
	}
	// Open loop: hits fall due by the clock, not by answers. At 15 s, 150
	// of the base rate and 450 more of the spike are due.
	if wait, _ := p.Pace(15*time.Second, 599); wait != 0 {
		t.Errorf("599 hits at 15 s: wait %v, want none (600 due)", wait)
	}
	if wait, _ := p.Pace(15*time.Second, 600); wait <= 0 {
		t.Errorf("600 hits at 15 s: no wait")
	}
}

// Run sends the mix's kinds at about the offered rate, from the given
// users, over the given clusters, and counts what came back.
func TestRun(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Method]++
		seen["token "+r.Header.Get("Authorization")]++
		seen["cluster "+strings.Split(r.URL.Path, "/")[2]]++
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "cm-00000") {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "{}", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("{}"))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	target := Target{GatewayURL: srv.URL, CAFile: ca, Tokens: []string{"a", "b"}, Clusters: []string{"c1", "c2", "c3"}, Objects: 4}
	res, err := Run(context.Background(), target, Mixed(200, 2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Sent(); n < 300 || n > 500 {
		t.Fatalf("%d requests in 2 s at 200/s", n)
	}
	for _, k := range []string{"GET", "POST", "PATCH", "token Bearer a", "token Bearer b", "cluster c1", "cluster c3"} {
		if seen[k] == 0 {
			t.Errorf("nothing with %q: %v", k, seen)
		}
	}
	for _, k := range []Kind{Get, List, Create, Patch} {
		if res.Latency[k].TotalCount() == 0 {
			t.Errorf("no %s recorded", k)
		}
	}
	if res.Codes[200] == 0 || res.Codes[503] == 0 || res.Failed() != res.Codes[503] || res.RetryAfter != res.Codes[503] {
		t.Errorf("codes %v, failed %d, with Retry-After %d", res.Codes, res.Failed(), res.RetryAfter)
	}
	if len(res.Timeline) < 2 || res.Timeline[0].Sent == 0 {
		t.Errorf("timeline %+v", res.Timeline)
	}
}
