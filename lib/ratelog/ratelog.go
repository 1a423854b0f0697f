// Package ratelog logs what strangers can cause at a bounded rate: a flood
// of refused credentials must not become a flood of log lines. Counters
// still count every event; the log keeps a few examples per interval and
// says how many it left out.
package ratelog

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Clock is the time a Logger keeps: time itself (Real), or a test's.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once, d from now.
	AfterFunc(d time.Duration, f func())
}

// Real is the wall clock.
type Real struct{}

func (Real) Now() time.Time                      { return time.Now() }
func (Real) AfterFunc(d time.Duration, f func()) { time.AfterFunc(d, f) }

// Logger writes at most Burst lines per Interval; the lines over that are
// counted, and one line at the end of the interval says how many.
type Logger struct {
	log      *slog.Logger
	what     string
	burst    int
	interval time.Duration
	clock    Clock

	mu         sync.Mutex
	start      time.Time // of the current interval
	written    int       // lines written in it
	suppressed int       // lines left out since the last report
	level      slog.Level
	reporting  bool // a report is scheduled
}

// New returns a Logger writing to log; what names the lines it limits in
// the report of those left out ("agent credential refusals").
func New(log *slog.Logger, what string, burst int, interval time.Duration, clock Clock) (*Logger, error) {
	if log == nil || clock == nil {
		return nil, errors.New("ratelog: a logger and a clock are required")
	}
	if burst < 1 || interval <= 0 {
		return nil, errors.New("ratelog: burst must be at least 1 and the interval positive")
	}
	return &Logger{log: log, what: what, burst: burst, interval: interval, clock: clock}, nil
}

// Warn logs at warning level, within the rate.
func (l *Logger) Warn(msg string, args ...any) {
	l.Log(context.Background(), slog.LevelWarn, msg, args...)
}

// Debug logs at debug level, within the rate.
func (l *Logger) Debug(msg string, args ...any) {
	l.Log(context.Background(), slog.LevelDebug, msg, args...)
}

// Log writes one line if this interval has room for it, else counts it.
// Lines of a level the handler drops are neither written nor counted.
func (l *Logger) Log(ctx context.Context, level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(ctx, level) {
		return
	}
	now := l.clock.Now()
	l.mu.Lock()
	if now.Sub(l.start) >= l.interval {
		l.start, l.written = now, 0
	}
	if l.written < l.burst {
		l.written++
		l.mu.Unlock()
		l.log.Log(ctx, level, msg, args...)
		return
	}
	// The report goes out at the most severe level it stands for.
	if l.suppressed == 0 || level > l.level {
		l.level = level
	}
	l.suppressed++
	schedule := !l.reporting
	l.reporting = true
	wait := l.interval - now.Sub(l.start)
	l.mu.Unlock()
	if schedule {
		// One report per interval of suppression, however long the flood.
		l.clock.AfterFunc(wait, l.report)
	}
}

// report writes how many lines were left out since the last report.
func (l *Logger) report() {
	l.mu.Lock()
	n, level := l.suppressed, l.level
	l.suppressed, l.level, l.reporting = 0, 0, false
	l.mu.Unlock()
	if n > 0 {
		l.log.Log(context.Background(), level, "log lines suppressed", "what", l.what, "suppressed", n)
	}
}
