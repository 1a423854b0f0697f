package gateway

import (
	"net/http"
	"reflect"
	"testing"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

func TestRequestedImpersonation(t *testing.T) {
	tests := []struct {
		name    string
		h       http.Header
		want    *tetherv1.Identity
		wantErr bool
	}{
		{"none", http.Header{"Accept": {"application/json"}}, nil, false},
		{"kubectl --as --as-group --as-uid", http.Header{"Impersonate-User": {"alice"}, "Impersonate-Group": {"devs", "ops"}, "Impersonate-Uid": {"u-1"}},
			&tetherv1.Identity{User: "alice", Uid: "u-1", Groups: []string{"devs", "ops"}}, false},
		// Header names arrive canonicalized; the key is lowercased, then
		// percent-decoded, as the kube-apiserver reads it.
		{"extras", http.Header{"Impersonate-User": {"alice"}, "Impersonate-Extra-Acme.example%2fteam": {"a", "b"}},
			&tetherv1.Identity{User: "alice", Extra: map[string]*tetherv1.Values{"acme.example/team": {Values: []string{"a", "b"}}}}, false},
		{"groups without a user", http.Header{"Impersonate-Group": {"system:masters"}}, nil, true},
		{"a uid without a user", http.Header{"Impersonate-Uid": {"u-1"}}, nil, true},
		{"an extra without a user", http.Header{"Impersonate-Extra-Scopes": {"x"}}, nil, true},
		{"an extra key that is not percent-encoded", http.Header{"Impersonate-User": {"alice"}, "Impersonate-Extra-%zz": {"x"}}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := requestedImpersonation(tt.h)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
