package kstatus

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		code       int
		reason     string
		retryAfter time.Duration
		header     string
	}{
		{404, "NotFound", 0, ""},
		{401, "Unauthorized", 0, ""},
		{503, "ServiceUnavailable", 2 * time.Second, "2"},
		{429, "TooManyRequests", 100 * time.Millisecond, "1"},
		{500, "InternalError", 0, ""},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		s := New(tt.code, "cluster \"c1\" is gone")
		if tt.retryAfter > 0 {
			s = s.WithRetryAfter(tt.retryAfter)
		}
		Write(rec, s)
		if rec.Code != tt.code {
			t.Errorf("code %d, want %d", rec.Code, tt.code)
		}
		if got := rec.Header().Get("Retry-After"); got != tt.header {
			t.Errorf("%d: Retry-After %q, want %q", tt.code, got, tt.header)
		}
		var got map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if got["kind"] != "Status" || got["apiVersion"] != "v1" || got["status"] != "Failure" ||
			got["reason"] != tt.reason || got["code"] != float64(tt.code) || got["message"] != "cluster \"c1\" is gone" {
			t.Errorf("%d: body %s", tt.code, rec.Body)
		}
	}
}
