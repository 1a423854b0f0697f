package subject

import (
	"strings"
	"testing"
)

func TestValidClusterID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"dev", true},
		{"prod-eu-1", true},
		{"a", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"*", false},
		{">", false},
		{"a.b", false},
		{"a b", false},
		{"-a", false},
		{"a-", false},
		{"A", false},
		{"a/b", false},
		{"..", false},
		{"a\x00", false},
		{"é", false},
	}
	for _, tt := range tests {
		if got := ValidClusterID(tt.id); got != tt.want {
			t.Errorf("ValidClusterID(%q) = %v, want %v", tt.id, got, tt.want)
		}
		_, err := Requests(tt.id)
		if (err == nil) != tt.want {
			t.Errorf("Requests(%q) error = %v", tt.id, err)
		}
	}
}

func TestLastNumber(t *testing.T) {
	if n, err := LastNumber(Session("s1", 42)); err != nil || n != 42 {
		t.Fatalf("got %d, %v", n, err)
	}
	if n, err := LastNumber(Router("r1", 7)); err != nil || n != 7 {
		t.Fatalf("got %d, %v", n, err)
	}
	if _, err := LastNumber("tether.sess.s1.x"); err == nil {
		t.Fatal("accepted a non-number")
	}
}
