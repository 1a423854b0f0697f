package main

import (
	"fmt"
	"sort"
	"time"
)

// samples are latencies of one measurement, with the failures seen.
type samples struct {
	d        []time.Duration
	errors   int
	firstErr string
}

func (s *samples) add(d time.Duration, err error) {
	if err != nil {
		s.errors++
		if s.firstErr == "" {
			s.firstErr = err.Error()
		}
		return
	}
	s.d = append(s.d, d)
}

func (s *samples) merge(o samples) {
	s.d = append(s.d, o.d...)
	s.errors += o.errors
	if s.firstErr == "" {
		s.firstErr = o.firstErr
	}
}

// pct is the q-quantile (0..1) by nearest rank.
func (s *samples) pct(q float64) time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	c := append([]time.Duration(nil), s.d...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	i := int(q*float64(len(c))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(c) {
		i = len(c) - 1
	}
	return c[i]
}

func (s *samples) mean() time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	var t time.Duration
	for _, d := range s.d {
		t += d
	}
	return t / time.Duration(len(s.d))
}

// ms formats a duration in milliseconds with three decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func msf(v float64) string { return fmt.Sprintf("%.3f", v) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}
