package gateway

import (
	"errors"
	"strings"
	"testing"

	"github.com/tether-dev/tether/lib/subject"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		path    string
		cluster string
		rest    string
		wantErr error
	}{
		{"/clusters/dev", "dev", "/", nil},
		{"/clusters/dev/", "dev", "/", nil},
		{"/clusters/dev/api/v1/namespaces", "dev", "/api/v1/namespaces", nil},
		{"/clusters/dev/api/v1/namespaces/a%2Fb", "dev", "/api/v1/namespaces/a%2Fb", nil},
		{"/clusters/dev/apis/x/clusters/other/api", "dev", "/apis/x/clusters/other/api", nil},
		{"/clusters/", "", "", errNotFound},
		{"/clusters", "", "", errNotFound},
		{"/api/v1", "", "", errNotFound},
		{"/clusters/%2A/api", "", "", errNotFound},
		{"/clusters/*/api", "", "", errNotFound},
		{"/clusters/>/api", "", "", errNotFound},
		{"/clusters/a.b/api", "", "", errNotFound},
		{"/clusters/a%20b/api", "", "", errNotFound},
		{"/clusters/dev%2Fapi", "", "", errNotFound},
		{"/clusters/" + strings.Repeat("a", 300) + "/api", "", "", errNotFound},
		{"/clusters/dev/../other/api", "", "", errDotSegment},
		{"/clusters/dev/api/%2e%2e/x", "", "", errDotSegment},
		{"/clusters/dev/api/%2E./x", "", "", errDotSegment},
		{"/clusters/dev/./api", "", "", errDotSegment},
	}
	for _, tt := range tests {
		cluster, rest, err := ParsePath(tt.path)
		if !errors.Is(err, tt.wantErr) || cluster != tt.cluster || rest != tt.rest {
			t.Errorf("ParsePath(%q) = %q, %q, %v; want %q, %q, %v", tt.path, cluster, rest, err, tt.cluster, tt.rest, tt.wantErr)
		}
	}
}

// FuzzParsePath: whatever the path, an accepted one names a valid cluster
// and a rest that starts with / and never climbs out of it.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/clusters/dev/api", "/clusters/dev/../x", "/clusters/%2e%2e/", "/clusters/a/b/c", "/clusters/*", "//clusters/dev"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		cluster, rest, err := ParsePath(p)
		if err != nil {
			return
		}
		if !subject.ValidClusterID(cluster) {
			t.Fatalf("accepted cluster %q", cluster)
		}
		if !strings.HasPrefix(rest, "/") {
			t.Fatalf("rest %q is not absolute", rest)
		}
		for _, seg := range strings.Split(rest, "/") {
			if seg == ".." || seg == "." {
				t.Fatalf("rest %q has a dot segment", rest)
			}
		}
	})
}
