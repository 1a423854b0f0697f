package driver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// emittedAnnotation is where agentsim's simulated clusters put the time
// they sent a watch event (fakekube.EmittedAnnotation).
const emittedAnnotation = "tether.dev/emitted"

// WatchResult is what a run of watches measured.
type WatchResult struct {
	Watches int
	// Opened is how many got their 200 within OpenTimeout; Broken how
	// many ended before the run did.
	Opened, Broken int
	Events         int64
	// Lag is from the simulated cluster's send to the driver's read, in
	// microseconds (same machine, same clock).
	Lag *hdrhistogram.Histogram
	// Settled is the lag of the events read once every watch had opened
	// or failed to: the steady state, without the opening rush. Opening is
	// how long that rush took.
	Settled *hdrhistogram.Histogram
	Opening time.Duration
	Errors  map[string]int
	Elapsed time.Duration
}

// RunWatches holds n watches through the gateway for d, spread over the
// target's clusters and, evenly, its users, and measures each event's lag.
func RunWatches(ctx context.Context, t Target, n int, d time.Duration) (*WatchResult, error) {
	if t.gateway() == "" || len(t.Tokens) == 0 || len(t.Clusters) == 0 || n <= 0 || d <= 0 {
		return nil, errors.New("driver: a gateway URL, tokens, clusters, a number of watches and a duration are required")
	}
	if t.Namespace == "" {
		t.Namespace = "load"
	}
	// No client timeout: a watch lasts d; its own timeoutSeconds ends it.
	client, err := Client(t.CAFile, 0)
	if err != nil {
		return nil, err
	}
	res := &WatchResult{Watches: n, Lag: newHistogram(), Settled: newHistogram(), Errors: map[string]int{}}
	var mu sync.Mutex
	start := time.Now()
	// settled is when the last watch opened or failed to (unix ns; 0:
	// not yet).
	var settled, outcomes atomic.Int64
	outcome := func() {
		if outcomes.Add(1) == int64(n) {
			settled.Store(time.Now().UnixNano())
		}
	}
	fail := func(why string) {
		mu.Lock()
		res.Errors[why]++
		mu.Unlock()
		outcome()
	}
	end := start.Add(d)
	ctx, cancel := context.WithDeadline(ctx, end.Add(30*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			secs := int(time.Until(end).Seconds())
			if secs < 1 {
				return
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.WatchURL(i, secs), nil)
			// Users in turn, so each holds an even share (gateways limit
			// the watches one user holds).
			req.Header.Set("Authorization", "Bearer "+t.Tokens[i%len(t.Tokens)])
			resp, err := client.Do(req)
			if err != nil {
				fail(shorten(err.Error()))
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				fail(fmt.Sprintf("HTTP %d", resp.StatusCode))
				return
			}
			mu.Lock()
			res.Opened++
			mu.Unlock()
			outcome()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
			lags, settledLags := newHistogram(), newHistogram()
			var events int64
			for sc.Scan() {
				var ev struct {
					Object struct {
						Metadata struct{ Annotations map[string]string }
					}
				}
				if json.Unmarshal(sc.Bytes(), &ev) != nil {
					continue
				}
				if sent, err := strconv.ParseInt(ev.Object.Metadata.Annotations[emittedAnnotation], 10, 64); err == nil {
					lag := max(time.Since(time.Unix(0, sent)).Microseconds(), 1)
					_ = lags.RecordValue(lag)
					if at := settled.Load(); at != 0 && sent > at {
						_ = settledLags.RecordValue(lag)
					}
				}
				events++
			}
			mu.Lock()
			defer mu.Unlock()
			res.Events += events
			res.Lag.Merge(lags)
			res.Settled.Merge(settledLags)
			// A watch ends at its timeoutSeconds, a few seconds before d.
			if time.Until(end) > 5*time.Second {
				res.Broken++
				if err := sc.Err(); err != nil {
					res.Errors[shorten(err.Error())]++
				}
			}
		}()
		// Open them at 500 a second at most, as clients coming in would.
		if i%500 == 499 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if at := settled.Load(); at != 0 {
		res.Opening = time.Unix(0, at).Sub(start)
	}
	return res, nil
}
