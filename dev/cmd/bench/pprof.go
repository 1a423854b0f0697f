package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tether-dev/tether/dev/stack"
)

// profiled are the services whose CPU profiles the extra phase takes.
var profiled = []string{"gateway", "router", "subscriber", "agent"}

// profileTether runs one more concurrent Tether phase, not counted in the
// figures, while it takes a CPU profile of each service from its admin
// endpoint (--pprof); it returns `go tool pprof -top` of each.
func profileTether(ctx context.Context, c config, s *stack.Stack, tether *target, bin, dir string) map[string]string {
	secs := max(int(c.duration.Seconds()), 1)
	out := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Timeout: time.Duration(secs+30) * time.Second}
	for _, svc := range profiled {
		wg.Add(1)
		go func() {
			defer wg.Done()
			text, err := profileOne(ctx, client, s.Admin[svc], secs, filepath.Join(bin, svc), filepath.Join(dir, svc+".pprof"))
			if err != nil {
				text = "no profile: " + err.Error()
			}
			mu.Lock()
			out[svc] = text
			mu.Unlock()
		}()
	}
	logf("profiling: %d concurrent workers for %ds via tether, CPU profiles of %s", c.workers, secs, strings.Join(profiled, ", "))
	res := concurrent(ctx, tether, smallPath, c.workers, time.Duration(secs)*time.Second+500*time.Millisecond)
	wg.Wait()
	logf("  %.0f requests/s while profiling, %d errors", res.rps(), res.lat.errors)
	return out
}

func profileOne(ctx context.Context, client *http.Client, admin string, secs int, binary, file string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, secs), nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s (is --pprof on?)", resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=15", binary, file).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w", err)
	}
	// Drop the File/Build ID/Type/Time lines; keep totals and the table.
	var keep []string
	for _, l := range strings.Split(strings.TrimRight(string(top), "\n"), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n"), nil
}
