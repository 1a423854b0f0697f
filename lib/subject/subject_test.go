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
	if n, err := LastNumber(Router("tether.rtr.router.r1", 7)); err != nil || n != 7 {
		t.Fatalf("got %d, %v", n, err)
	}
	if _, err := LastNumber("tether.sess.s1.x"); err == nil {
		t.Fatal("accepted a non-number")
	}
}

func TestSessionOf(t *testing.T) {
	tests := []struct {
		subj, want string
		ok         bool
	}{
		{Session("abc_DEF-1", 7), "abc_DEF-1", true},
		{Session("s", 0), "s", true},
		{"tether.sess.", "", false},
		{"tether.sess.7", "", false},
		{"tether.sess.a.b.3", "", false}, // a session id never holds a dot
		{"tether.rtr.r-1.3", "", false},
		{"tether.sess.*.3", "", false},
	}
	for _, tt := range tests {
		got, ok := SessionOf(tt.subj)
		if got != tt.want || ok != tt.ok {
			t.Errorf("SessionOf(%q) = %q, %v; want %q, %v", tt.subj, got, ok, tt.want, tt.ok)
		}
	}
}

// A router's inbox starts with its NATS user, the token its permissions
// confine it to; neither part may carry a wildcard or a separator.
func TestRouterInbox(t *testing.T) {
	tests := []struct {
		user, router, want string
	}{
		{"router-0", "router-0-a1b2", "tether.rtr.router-0.router-0-a1b2"},
		{"router", "pod-x_1", "tether.rtr.router.pod-x_1"},
		{"router.x", "r", ""},
		{"*", "r", ""},
		{"router", ">", ""},
		{"router", "", ""},
		{"", "r", ""},
	}
	for _, tt := range tests {
		got, err := RouterInbox(tt.user, tt.router)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("RouterInbox(%q, %q) = %q, %v; want %q", tt.user, tt.router, got, err, tt.want)
		}
	}
	if w, c := RouterWildcard("tether.rtr.u.r"), Router("tether.rtr.u.r", 3); w != "tether.rtr.u.r.*" || c != "tether.rtr.u.r.3" {
		t.Errorf("RouterWildcard = %q, Router = %q", w, c)
	}
}

func TestSessionIDNamesItsProcess(t *testing.T) {
	process := NewProcess()
	id := NewSession(process)
	if p, ok := ProcessOf(id); !ok || p != process || id == NewSession(process) {
		t.Fatalf("ProcessOf(NewSession(%q)) = %q, %v (id %q)", process, p, ok, id)
	}
	tests := []struct {
		session string
		process string
		ok      bool
	}{
		{"0123456789abcdef_fedcba9876543210", "0123456789abcdef", true},
		{"Ab3-_x9QkL0pZz1w", "", false}, // a subscriber's before ADR 016
		{"0123456789ABCDEF_fedcba9876543210", "", false},
		{"0123456789abcdef_fedcba987654321", "", false},
		{"0123456789abcdef-fedcba9876543210", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if p, ok := ProcessOf(tt.session); p != tt.process || ok != tt.ok {
			t.Errorf("ProcessOf(%q) = %q, %v; want %q, %v", tt.session, p, ok, tt.process, tt.ok)
		}
	}
}
