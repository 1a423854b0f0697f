package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tether-dev/tether/dev/procstat"
)

// hist is the sum and count of one histogram series.
type hist struct{ sum, count float64 }

// hopTimes scrapes tether_request_duration_seconds from each admin address
// and returns it by hop label.
func hopTimes(ctx context.Context, admin map[string]string) (map[string]hist, error) {
	out := map[string]hist{}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, svc := range []string{"gateway", "router", "agent"} {
		a, ok := admin[svc]
		if !ok {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a+"/metrics", nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("scraping %s: %w", svc, err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var field string
			switch {
			case strings.HasPrefix(line, "tether_request_duration_seconds_sum{"):
				field = "sum"
			case strings.HasPrefix(line, "tether_request_duration_seconds_count{"):
				field = "count"
			default:
				continue
			}
			hop := label(line, "hop")
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil || hop == "" {
				continue
			}
			h := out[hop]
			if field == "sum" {
				h.sum += v
			} else {
				h.count += v
			}
			out[hop] = h
		}
		resp.Body.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("scraping %s: %w", svc, err)
		}
	}
	return out, nil
}

func label(line, name string) string {
	i := strings.Index(line, name+`="`)
	if i < 0 {
		return ""
	}
	rest := line[i+len(name)+2:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}

// hopDelta accumulates the difference of two scrapes into acc.
func hopDelta(acc, before, after map[string]hist) {
	for hop, a := range after {
		b := before[hop]
		h := acc[hop]
		h.sum += a.sum - b.sum
		h.count += a.count - b.count
		acc[hop] = h
	}
}

// meanMS is the mean of a histogram delta in milliseconds.
func (h hist) meanMS() float64 {
	if h.count == 0 {
		return 0
	}
	return h.sum / h.count * 1000
}

// cpuTimes is the CPU time (user+system) of this process and of each of its
// children, by command name: the stack's services, NATS and the control
// plane all run as our children.
func cpuTimes() map[string]time.Duration {
	out := map[string]time.Duration{}
	self := os.Getpid()
	if d, _, _, ok := procstat.Stat(self); ok {
		out["bench (client)"] = d
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		d, ppid, comm, ok := procstat.Stat(pid)
		if ok && ppid == self {
			out[comm] += d
		}
	}
	return out
}

func cpuDelta(before, after map[string]time.Duration) map[string]time.Duration {
	out := map[string]time.Duration{}
	for k, a := range after {
		out[k] = a - before[k]
	}
	return out
}

// machineBusy is the CPU time the whole machine spent not idle, from
// /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // not idle, not iowait, not guest
			busy += n
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// cpuMeter measures a phase's CPU: ours by process, and the share of the
// machine that processes other than ours used meanwhile.
type cpuMeter struct {
	t0    time.Time
	busy0 time.Duration
	ours0 map[string]time.Duration
}

func startCPU() cpuMeter {
	return cpuMeter{t0: time.Now(), busy0: machineBusy(), ours0: cpuTimes()}
}

func (m cpuMeter) stop() (map[string]time.Duration, float64) {
	ours := cpuDelta(m.ours0, cpuTimes())
	other := machineBusy() - m.busy0
	for _, d := range ours {
		other -= d
	}
	capacity := time.Since(m.t0).Seconds() * float64(runtime.NumCPU())
	return ours, max(other.Seconds(), 0) / capacity
}
