package subscriber

import (
	"testing"
	"time"
)

func TestAdmission(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	if _, ok := newAdmission(0, 0).admit(t0); !ok {
		t.Fatal("no bound refused a stream")
	}
	a := newAdmission(100, 10)
	steps := []struct {
		name     string
		at       time.Duration
		n        int
		admitted int
		lastWait time.Duration
	}{
		{"the burst", 0, 10, 10, 0},
		// Told to wait long enough for all those refused with it to get
		// in first, at 100 a second.
		{"500 beyond the burst", 0, 500, 0, 5 * time.Second},
		{"the next second: the burst again, then the backlog remembered", 1100 * time.Millisecond, 11, 10, 5 * time.Second},
		{"a quiet spell later: the least wait", 10 * time.Second, 11, 10, time.Second},
	}
	for _, st := range steps {
		admitted := 0
		var wait time.Duration
		for range st.n {
			d, ok := a.admit(t0.Add(st.at))
			if ok {
				admitted++
			} else {
				wait = d
			}
		}
		if admitted != st.admitted || wait != st.lastWait {
			t.Errorf("%s: %d admitted, last wait %v; want %d, %v", st.name, admitted, wait, st.admitted, st.lastWait)
		}
	}
}
