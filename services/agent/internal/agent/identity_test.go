package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
)

// The agent learns every header the kube-apiserver takes a user from, as
// the kube-apiserver publishes them, and refuses front-proxy mode where
// there is no front proxy.
func TestFrontProxyOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
		want FrontProxy
		err  error
	}{
		{"published", `{"data":{"requestheader-client-ca-file":"PEM","requestheader-username-headers":"[\"X-Remote-User\",\"X-Forwarded-User\"]",
			"requestheader-group-headers":"[\"X-Remote-Group\",\"X-Forwarded-Groups\"]","requestheader-extra-headers-prefix":"[\"X-Remote-Extra-\"]",
			"requestheader-uid-headers":"[\"X-Remote-Uid\"]"}}`,
			FrontProxy{UserHeaders: []string{"X-Remote-User", "X-Forwarded-User"}, UIDHeaders: []string{"X-Remote-Uid"},
				GroupHeaders: []string{"X-Remote-Group", "X-Forwarded-Groups"}, ExtraPrefixes: []string{"X-Remote-Extra-"}}, nil},
		{"no front proxy", `{"data":{"client-ca-file":"PEM"}}`, FrontProxy{}, ErrNoFrontProxy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication" {
					http.NotFound(w, r)
					return
				}
				_, _ = w.Write([]byte(tc.data))
			}))
			defer srv.Close()
			got, err := FrontProxyOf(context.Background(), http.DefaultTransport, srv.URL)
			if !errors.Is(err, tc.err) || tc.err == nil && err != nil {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if tc.err == nil && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Merging keeps the first list's names first (they carry the user) and
// adds the other's, once, whatever their case.
func TestFrontProxyMerge(t *testing.T) {
	a := FrontProxy{UserHeaders: []string{"X-Tenant-User"}, GroupHeaders: []string{"X-Tenant-Group"}, ExtraPrefixes: []string{"X-Tenant-Extra-"}}
	got := a.Merge(FrontProxy{UserHeaders: []string{"x-tenant-user", "X-Remote-User"}, UIDHeaders: []string{"X-Remote-Uid"}})
	want := FrontProxy{UserHeaders: []string{"X-Tenant-User", "X-Remote-User"}, UIDHeaders: []string{"X-Remote-Uid"}, GroupHeaders: []string{"X-Tenant-Group"}, ExtraPrefixes: []string{"X-Tenant-Extra-"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
