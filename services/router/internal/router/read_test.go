package router

import (
	"testing"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

func TestIsRead(t *testing.T) {
	tests := []struct {
		name string
		open *tetherv1.Open
		want bool
	}{
		{"get", &tetherv1.Open{Method: "GET", Path: "/api/v1/namespaces", End: true}, true},
		{"list with chunks", &tetherv1.Open{Method: "GET", Path: "/api/v1/pods", Query: "limit=500&continue=x", End: true}, true},
		{"head", &tetherv1.Open{Method: "HEAD", Path: "/api", End: true}, true},
		{"watch", &tetherv1.Open{Method: "GET", Path: "/api/v1/pods", Query: "watch=true", End: true}, false},
		{"watch=1", &tetherv1.Open{Method: "GET", Path: "/api/v1/pods", Query: "watch=1", End: true}, false},
		{"old watch path", &tetherv1.Open{Method: "GET", Path: "/api/v1/watch/pods", End: true}, false},
		{"logs -f", &tetherv1.Open{Method: "GET", Path: "/api/v1/namespaces/d/pods/p/log", Query: "follow=true", End: true}, false},
		{"exec", &tetherv1.Open{Method: "GET", Path: "/api/v1/namespaces/d/pods/p/exec", Upgrade: "websocket"}, false},
		{"post", &tetherv1.Open{Method: "POST", Path: "/api/v1/namespaces", End: true}, false},
		{"delete", &tetherv1.Open{Method: "DELETE", Path: "/api/v1/namespaces/x", End: true}, false},
		{"get with a body", &tetherv1.Open{Method: "GET", Path: "/api"}, false},
	}
	for _, tt := range tests {
		if got := isRead(tt.open); got != tt.want {
			t.Errorf("%s: isRead = %v, want %v", tt.name, got, tt.want)
		}
	}
}
