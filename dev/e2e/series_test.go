package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
)

// tetherSeries counts the series of the tether_* families a service
// exports: one line each in the text format.
func tetherSeries(t *testing.T, service string) int {
	t.Helper()
	resp, err := http.Get("http://" + env.stack.Admin[service] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "tether_") {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// A user who asks for 10,000 clusters that do not exist mints no metric
// series in any service (no label value comes from a cluster id), and
// leaves no goroutine or heap behind in the gateway or anywhere else.
func TestRandomClusterIDsMintNoSeries(t *testing.T) {
	client := gatewayClient(t)
	get := func(cluster string) (int, error) {
		req, err := http.NewRequest("GET", env.stack.GatewayURL+"/clusters/"+cluster+"/api/v1/namespaces/default/configmaps?limit=1", nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token("admin"))
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	randomID := func() string {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		return "r" + hex.EncodeToString(b)
	}
	// Every service of the request path, each replica.
	var watched []string
	for name := range env.stack.Admin {
		for _, s := range []string{"gateway", "router", "subscriber"} {
			if name == s || strings.HasPrefix(name, s+"-") {
				watched = append(watched, name)
			}
		}
	}
	sort.Strings(watched)
	// The series a refused request makes (a 404 code) exist before the
	// count: what is counted after is what 10,000 ids add.
	for range 3 {
		if _, err := get(randomID()); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string]int{}
	for _, s := range watched {
		before[s] = tetherSeries(t, s)
	}
	base := measure(t)

	const total, workers = 10000, 50
	ids := make(chan string, total)
	for range total {
		ids <- randomID()
	}
	close(ids)
	var mu sync.Mutex
	codes := map[int]int{}
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for id := range ids {
				code, err := get(id)
				mu.Lock()
				codes[code]++
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if codes[http.StatusNotFound] != total {
		t.Fatalf("10,000 clusters that do not exist answered %v, want only 404", codes)
	}
	for _, s := range watched {
		// A few series may appear for reasons of their own (a first
		// retry, a first refusal); one per cluster id would be 10,000.
		after := tetherSeries(t, s)
		t.Logf("%s: %d tether_* series before, %d after", s, before[s], after)
		if after > before[s]+20 {
			t.Errorf("%s grew from %d to %d series over 10,000 cluster ids", s, before[s], after)
		}
	}
	base.expectBack(t, "10,000 cluster ids")
}
