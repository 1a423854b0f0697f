package kubelet

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCRILogRoundTrip(t *testing.T) {
	var file bytes.Buffer
	l := &criLog{w: &file}
	l.write("stdout", []byte("one\ntw"))
	l.write("stderr", []byte("oops\n"))
	l.write("stdout", []byte("o\nthree"))
	l.flush()

	tests := []struct {
		name       string
		limit      int64
		timestamps bool
		want       string
	}{
		{"plain", -1, false, "one\noops\ntwo\nthree\n"},
		{"limited", 6, false, "one\noo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			lw := &logWriter{w: rec, limit: tt.limit, timestamps: tt.timestamps}
			for _, line := range strings.SplitAfter(file.String(), "\n") {
				if !lw.write(line) {
					break
				}
			}
			if got := rec.Body.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}

	for _, line := range strings.Split(strings.TrimSpace(file.String()), "\n") {
		e, ok := parseCRI(line + "\n")
		if !ok || (e.stream != "stdout" && e.stream != "stderr") || e.partial {
			t.Errorf("entry %q parsed as %+v, %v", line, e, ok)
		}
	}
	if _, ok := parseCRI("not a log line\n"); ok {
		t.Error("garbage parsed as an entry")
	}
}

func TestCRILogSplitsLongLines(t *testing.T) {
	var file bytes.Buffer
	l := &criLog{w: &file}
	long := strings.Repeat("x", 20<<10)
	l.write("stdout", []byte(long))
	l.write("stdout", []byte("\n"))
	rec := httptest.NewRecorder()
	lw := &logWriter{w: rec, limit: -1}
	parts := 0
	for _, line := range strings.SplitAfter(file.String(), "\n") {
		if line != "" {
			parts++
			lw.write(line)
		}
	}
	if parts != 2 || rec.Body.String() != long+"\n" {
		t.Errorf("%d entries, %d bytes back", parts, rec.Body.Len())
	}
}
