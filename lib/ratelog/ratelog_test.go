package ratelog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeClock runs what is scheduled when the test moves time past it.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	timer []timer
}

type timer struct {
	at time.Time
	f  func()
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = append(c.timer, timer{c.now.Add(d), f})
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	sort.SliceStable(c.timer, func(i, j int) bool { return c.timer[i].at.Before(c.timer[j].at) })
	var due []func()
	for len(c.timer) > 0 && !c.timer[0].at.After(c.now) {
		due = append(due, c.timer[0].f)
		c.timer = c.timer[1:]
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// A step of a test: log n lines at level, then let time pass.
type step struct {
	n     int
	level slog.Level
	after time.Duration
}

// line is what a test reads back from the JSON log.
type line struct {
	Level      string
	Msg        string
	Suppressed int
}

func TestLoggerLimitsRate(t *testing.T) {
	for _, tt := range []struct {
		name  string
		steps []step
		want  []line
	}{
		{
			name:  "under the burst: every line",
			steps: []step{{n: 3, level: slog.LevelWarn, after: 2 * time.Second}},
			want:  []line{{"WARN", "refused", 0}, {"WARN", "refused", 0}, {"WARN", "refused", 0}},
		},
		{
			name:  "a flood: the burst, then one report at the end of the interval",
			steps: []step{{n: 10000, level: slog.LevelWarn, after: time.Second}},
			want: []line{
				{"WARN", "refused", 0}, {"WARN", "refused", 0}, {"WARN", "refused", 0},
				{"WARN", "log lines suppressed", 9997},
			},
		},
		{
			name: "a flood over three intervals: a burst and a report in each",
			steps: []step{
				{n: 5, level: slog.LevelWarn, after: time.Second},
				{n: 5, level: slog.LevelWarn, after: time.Second},
				{n: 4, level: slog.LevelWarn, after: time.Second},
			},
			want: []line{
				{"WARN", "refused", 0}, {"WARN", "refused", 0}, {"WARN", "refused", 0},
				{"WARN", "log lines suppressed", 2},
				{"WARN", "refused", 0}, {"WARN", "refused", 0}, {"WARN", "refused", 0},
				{"WARN", "log lines suppressed", 2},
				{"WARN", "refused", 0}, {"WARN", "refused", 0}, {"WARN", "refused", 0},
				{"WARN", "log lines suppressed", 1},
			},
		},
		{
			name:  "no report before the interval ends",
			steps: []step{{n: 5, level: slog.LevelWarn, after: 999 * time.Millisecond}},
			want:  []line{{"WARN", "refused", 0}, {"WARN", "refused", 0}, {"WARN", "refused", 0}},
		},
		{
			name: "the report has the most severe level it stands for",
			steps: []step{
				{n: 3, level: slog.LevelInfo},
				{n: 1, level: slog.LevelWarn},
				{n: 1, level: slog.LevelInfo, after: time.Second},
			},
			want: []line{
				{"INFO", "refused", 0}, {"INFO", "refused", 0}, {"INFO", "refused", 0},
				{"WARN", "log lines suppressed", 2},
			},
		},
		{
			name:  "a level the handler drops is neither written nor counted",
			steps: []step{{n: 10, level: slog.LevelDebug, after: time.Second}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			clock := &fakeClock{now: time.Unix(1e9, 0)}
			l, err := New(slog.New(slog.NewJSONHandler(&buf, nil)), "refusals", 3, time.Second, clock)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.steps {
				for range s.n {
					l.Log(t.Context(), s.level, "refused")
				}
				clock.advance(s.after)
			}
			var got []line
			dec := json.NewDecoder(&buf)
			for dec.More() {
				var ln line
				if err := dec.Decode(&ln); err != nil {
					t.Fatal(err)
				}
				got = append(got, ln)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines %+v, want %+v", len(got), got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tt := range []struct {
		name     string
		log      *slog.Logger
		burst    int
		interval time.Duration
		clock    Clock
	}{
		{"no logger", nil, 1, time.Second, Real{}},
		{"no clock", log, 1, time.Second, nil},
		{"no burst", log, 0, time.Second, Real{}},
		{"no interval", log, 1, 0, Real{}},
	} {
		if _, err := New(tt.log, "x", tt.burst, tt.interval, tt.clock); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}
