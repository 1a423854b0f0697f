package backoff

import (
	"testing"
	"time"
)

func TestNextStaysWithinJitterBoundsAndCap(t *testing.T) {
	b := &Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Factor: 2}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		d := b.Next()
		if d < w/2 || d > w {
			t.Fatalf("attempt %d: %v outside [%v, %v]", i, d, w/2, w)
		}
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after Reset: %v", d)
	}
}

func TestSpreadStaysWithinItsShare(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		frac float64
	}{{time.Second, 0.25}, {15 * time.Second, 0.5}, {time.Second, 2}, {0, 1}} {
		for range 1000 {
			if got := Spread(tt.d, tt.frac); got < tt.d || got > tt.d+time.Duration(tt.frac*float64(tt.d)) {
				t.Fatalf("Spread(%v, %g) = %v", tt.d, tt.frac, got)
			}
		}
	}
}
