package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/tether-dev/tether/dev/procstat"
)

const bigNamespace = "bench-big"

// fill creates namespace bench-big and count ConfigMaps of size bytes each,
// directly, with 4 requests in flight. The data is random base64, which no
// hop can compress much.
func fill(ctx context.Context, t *target, count, size int) error {
	ns := fmt.Sprintf(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":%q}}`, bigNamespace)
	code, body, err := t.send(ctx, http.MethodPost, "/api/v1/namespaces", ns)
	if err != nil {
		return err
	}
	if code != http.StatusCreated && code != http.StatusConflict {
		return fmt.Errorf("creating namespace: %d %s", code, body)
	}
	jobs := make(chan int)
	errs := make(chan error, count)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := make([]byte, size*3/4)
			for i := range jobs {
				_, _ = rand.Read(raw)
				cm, _ := json.Marshal(map[string]any{
					"apiVersion": "v1", "kind": "ConfigMap",
					"metadata": map[string]any{"name": fmt.Sprintf("blob-%03d", i)},
					"data":     map[string]string{"blob": base64.StdEncoding.EncodeToString(raw)},
				})
				code, body, err := t.send(ctx, http.MethodPost, "/api/v1/namespaces/"+bigNamespace+"/configmaps", string(cm))
				if err == nil && code != http.StatusCreated && code != http.StatusConflict {
					err = fmt.Errorf("creating configmap %d: %d %.200s", i, code, body)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < count; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	return <-errs
}

// listing is one GET of the big list.
type listing struct {
	bytes int64
	d     time.Duration
	err   error
}

func listBig(ctx context.Context, t *target) listing {
	start := time.Now()
	n, _, err := t.get(ctx, "/api/v1/namespaces/"+bigNamespace+"/configmaps", map[string]string{"Accept-Encoding": "identity"})
	return listing{bytes: n, d: time.Since(start), err: err}
}

// mbps is body megabytes (10^6) per second over all successful listings.
func mbps(ls []listing) (float64, int64) {
	var b int64
	var d time.Duration
	for _, l := range ls {
		if l.err == nil {
			b += l.bytes
			d += l.d
		}
	}
	if d == 0 {
		return 0, 0
	}
	return float64(b) / 1e6 / d.Seconds(), b / int64(max(len(ls), 1))
}

// rssSampler records the peak VmRSS of some processes every 50 ms.
type rssSampler struct {
	pids map[string]int
	mu   sync.Mutex
	peak map[string]int64
	stop chan struct{}
	done chan struct{}
}

func sampleRSS(pids map[string]int) *rssSampler {
	s := &rssSampler{pids: pids, peak: map[string]int64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			s.mu.Lock()
			for name, pid := range s.pids {
				s.peak[name] = max(s.peak[name], procstat.RSSKB(pid))
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) finish() map[string]int64 {
	close(s.stop)
	<-s.done
	return s.peak
}
