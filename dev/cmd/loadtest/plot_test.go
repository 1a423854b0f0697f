package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-dev/tether/loadtest/driver"
)

func TestPlotLoad(t *testing.T) {
	tl := []driver.Second{{Offered: 100, Sent: 100, OK: 100, P50: 2 * time.Millisecond, P99: 9 * time.Millisecond},
		{Offered: 1000, Sent: 1000, OK: 900, Fail: 100, P50: 20 * time.Millisecond, P99: 90 * time.Millisecond}}
	path := filepath.Join(t.TempDir(), "p.png")
	if err := plotLoad(path, "spike", tl); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) || len(b) < 5000 {
		t.Fatalf("%d bytes, %v: not a plot", len(b), err)
	}
}
