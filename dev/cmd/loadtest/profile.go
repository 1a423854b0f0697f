package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tether-dev/tether/dev/stack"
)

// profiled are the processes whose profiles --profile takes.
var profiled = []string{"gateway", "router", "subscriber"}

// profileMiddle takes a CPU profile of each profiled process over the
// middle third of the load, then its heap and goroutines, into
// c.profileDir: PROCESS-SCENARIO-{cpu,heap,goroutine}.pprof, for
// `go tool pprof`.
func profileMiddle(ctx context.Context, c config, s *stack.Stack) {
	if err := os.MkdirAll(c.profileDir, 0o755); err != nil {
		logf("profiles: %v", err)
		return
	}
	third := c.duration / 3
	if !sleep(ctx, third) {
		return
	}
	var wg sync.WaitGroup
	for _, name := range profiled {
		wg.Go(func() {
			base := "http://" + s.Admin[name] + "/debug/pprof/"
			prefix := filepath.Join(c.profileDir, name+"-"+c.scenario)
			if err := fetch(ctx, base+fmt.Sprintf("profile?seconds=%d", max(1, int(third.Seconds()))), prefix+"-cpu.pprof", third+30*time.Second); err != nil {
				logf("profiles: %s: %v", name, err)
				return
			}
			for _, kind := range []string{"heap", "goroutine"} {
				if err := fetch(ctx, base+kind, prefix+"-"+kind+".pprof", 30*time.Second); err != nil {
					logf("profiles: %s: %v", name, err)
				}
			}
		})
	}
	wg.Wait()
	logf("profiles of %v are in %s", profiled, c.profileDir)
}

func fetch(ctx context.Context, url, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
